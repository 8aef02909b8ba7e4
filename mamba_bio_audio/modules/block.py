"""Residual blocks (pre-norm Mamba mixer, optional gated MLP) and a plain stack of them."""

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .mixer import Mamba, MixerState
from .norm import RMSNorm


class GatedMLP(nn.Module):
    """fc2(a * silu(g)) with (a, g) = fc1(x), hidden width mlp_expand * d_model.

    Shape:
        (..., d_model) -> (..., d_model)
    """

    def __init__(self, d_model: int, hidden: int, bias: bool = False):
        super().__init__()
        self.fc1 = nn.Linear(d_model, 2 * hidden, bias=bias)
        self.fc2 = nn.Linear(hidden, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, g = self.fc1(x).chunk(2, dim=-1)
        return self.fc2(a * F.silu(g))


class Block(nn.Module):
    """x = x + mixer(norm(x)); then, with mlp_expand > 0, x = x + mlp(norm2(x)).

    The residual stream is kept in fp32 when config.residual_in_fp32 (also under autocast).

    Args:
        config: a MambaConfig.
        d_model: width of this block.
    Shape:
        forward: (b, l, d_model) -> (b, l, d_model);  step: (b, d_model) -> (b, d_model)
    """

    def __init__(self, config, d_model: int):
        super().__init__()
        self.residual_in_fp32 = config.residual_in_fp32
        self.norm = RMSNorm(d_model, config.norm_eps)
        self.mixer = Mamba(config, d_model)
        self.mlp = None
        if config.mlp_expand > 0:
            self.norm2 = RMSNorm(d_model, config.norm_eps)
            self.mlp = GatedMLP(d_model, config.mlp_expand * d_model, config.bias)

    def _add(self, residual: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        if self.residual_in_fp32:
            return residual.float() + out.float()
        return residual + out.to(residual.dtype)

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.mlp is None else self._add(x, self.mlp(self.norm2(x)))

    def forward(self, x: torch.Tensor, state: MixerState = None,
                reverse_index: torch.Tensor = None) -> torch.Tensor:
        return self._mlp(self._add(x, self.mixer(self.norm(x), state, reverse_index)))

    def step(self, x: torch.Tensor, state: MixerState) -> torch.Tensor:
        return self._mlp(self._add(x, self.mixer.step(self.norm(x), state)))


class Stack(nn.ModuleList):
    """n blocks of one width, run in sequence; the isotropic body and each U-Net stage.

    Args:
        config: a MambaConfig (gradient_checkpointing is read here).
        d_model: width.
        n: number of blocks.
    """

    def __init__(self, config, d_model: int, n: int):
        super().__init__(Block(config, d_model) for _ in range(n))
        self.gradient_checkpointing = config.gradient_checkpointing

    def forward(self, x: torch.Tensor, state: list = None,
                reverse_index: torch.Tensor = None) -> torch.Tensor:
        """x: (b, l, d) -> (b, l, d).

        Args:
            state: optional list of MixerState, one per block, advanced to the end of x.
            reverse_index: (b, l) for bidirectional blocks, see `mixer.reverse_index`.
        """
        for i, block in enumerate(self):
            if state is not None:
                x = block(x, state[i])
            elif self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, None, reverse_index, use_reentrant=False)
            else:
                x = block(x, None, reverse_index)
        return x

    def step(self, x: torch.Tensor, state: list) -> torch.Tensor:
        """x: (b, d) -> (b, d); state updated in place."""
        for block, s in zip(self, state):
            x = block.step(x, s)
        return x

    def allocate_state(self, batch_size: int, device=None) -> list:
        return [block.mixer.allocate_state(batch_size, device) for block in self]
