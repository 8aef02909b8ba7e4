"""The backbone: token embedding, a body of Mamba blocks (isotropic stack or U-Net), final norm."""

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..modules.block import Stack
from ..modules.mixer import reverse_index
from ..modules.norm import RMSNorm
from .unet import UNet


class MambaBackbone(nn.Module):
    """ids -> hidden states, in parallel mode (`forward`) or one step at a time (`step`).

    Isotropic: n_layer blocks of width d_model (the DNA models). U-Net: see `unet.UNet` (the audio
    models). Both are causal unless config.bidirectional.

    Args:
        config: a MambaConfig.
    Shape:
        forward: (b, L) int -> (b, L, d_model);  step: (b,) int -> (b, d_model)
    """

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.padded_vocab_size, config.d_model)
        if config.backbone == "unet":
            self.body = UNet(config)
        else:
            self.body = Stack(config, config.d_model, config.n_layer)
        self.norm_f = RMSNorm(config.d_model, config.norm_eps)

    def forward(self, ids: torch.Tensor, state=None, mask: torch.Tensor = None) -> torch.Tensor:
        """Args:
            ids: (b, L) token ids. For the U-Net, L must be a multiple of prod(unet_pool).
            state: optional recurrent state from `allocate_state` to start from; it is left at the
                end of the sequence (used to prime generation with the parallel forward).
            mask: optional (b, L) bool, True at real tokens; a bidirectional backbone then
                reverses only the real tokens. Pad on the right: then no real token reads
                padding, in either direction (a causal backbone needs no mask for that).
        Returns:
            (b, L, d_model) hidden states (fp32 with residual_in_fp32).
        """
        if ids.dim() != 2:
            raise ValueError(f"ids: expected shape (batch, length), got {tuple(ids.shape)}")
        P = self.config.pool_product
        if ids.shape[1] % P:
            raise ConfigError(f"input length {ids.shape[1]} is not a multiple of the U-Net pooling "
                              f"product {P} (unet_pool={self.config.unet_pool}); use a sequence "
                              f"length that is a multiple of {P}")
        if state is not None and P > 1 and state.pos % P:
            raise ValueError(f"the U-Net state is at position {state.pos}, inside a pooling window "
                             f"of {P}; step to a multiple of {P} before a parallel forward")
        x = self.embedding(ids)  # (b, L, d)
        if self.config.bidirectional:
            x = self.body(x, None, None if mask is None else reverse_index(mask))
        else:
            x = self.body(x, state)
        return self.norm_f(x)

    def step(self, ids: torch.Tensor, state) -> torch.Tensor:
        """One time step: ids (b,) -> (b, d_model); `state` is updated in place."""
        return self.norm_f(self.body.step(self.embedding(ids), state))

    def set_position(self, state, position: int) -> None:
        """Set the U-Net's step counters as after `position` steps (isotropic: nothing to do)."""
        if isinstance(self.body, UNet):
            self.body.set_position(state, position)

    def allocate_state(self, batch_size: int, device=None):
        """Zero recurrent state (fp32, constant size) for `batch_size` sequences."""
        if self.config.bidirectional:
            raise ValueError("a bidirectional backbone has no recurrent mode")
        return self.body.allocate_state(batch_size, device or self.embedding.weight.device)
