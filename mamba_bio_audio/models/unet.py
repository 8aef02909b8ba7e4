"""The U-Net body (SaShiMi layout with Mamba blocks), causal, with a constant-memory recurrent step.

One stage per pooling factor p, nested:

    x = down(x)          blocks at width d, length L
    y = inner(pool(x))   pool: reshape (L/p, d*p) + Linear -> (L/p, d*expand); inner: next stage
    x = x + unpool(y)    Linear -> (L/p, d*p) + reshape -> (L, d), shifted by one pooled step
    x = up(x)            blocks at width d

The shift keeps the model causal: outputs at positions [jp, jp + p) see pooled step j - 1, which
summarises inputs before jp; the skip connection brings in the current position. The innermost
`inner` is a plain stack of blocks (the centre stage).

In recurrent mode each stage buffers the last p down-path outputs (to pool them once p have
arrived) and the p up-sampled vectors of the last pooled output (to add one per step), so one call
of `step` consumes one sample in constant time and memory.
"""

from dataclasses import dataclass
from typing import Union

import torch
import torch.nn as nn

from ..modules.block import Stack


@dataclass
class UNetState:
    """Recurrent state of one U-Net stage.

    Attributes:
        down, up: lists of MixerState of the down- and up-path blocks.
        inner: the next stage's UNetState, or the centre stack's list of MixerState.
        down_buf: (b, p, d) down-path outputs of the current pooling window.
        up_buf: (b, p, d) up-sampled vectors to add during the current window.
        pos: number of time steps this stage has consumed.
    """

    down: list
    up: list
    inner: Union["UNetState", list]
    down_buf: torch.Tensor
    up_buf: torch.Tensor
    pos: int = 0


class DownPool(nn.Module):
    """(b, L, d) -> (b, L/p, d * expand): reshape p steps into one, then Linear."""

    def __init__(self, d_model: int, pool: int, expand: int):
        super().__init__()
        self.pool = pool
        self.linear = nn.Linear(d_model * pool, d_model * expand)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, L, d = x.shape
        return self.linear(x.reshape(b, L // self.pool, self.pool * d))


class UpPool(nn.Module):
    """(b, L/p, d * expand) -> (b, L, d): Linear, reshape, and shift right by one pooled step."""

    def __init__(self, d_model: int, pool: int, expand: int):
        super().__init__()
        self.d_model, self.pool = d_model, pool
        self.linear = nn.Linear(d_model * expand, d_model * pool)

    def expand_one(self, y: torch.Tensor) -> torch.Tensor:
        """One pooled vector (b, d * expand) -> its p up-sampled vectors (b, p, d)."""
        return self.linear(y).view(y.shape[0], self.pool, self.d_model)

    def first(self, batch_size: int) -> torch.Tensor:
        """What the first window sees (the up-sampling of a zero vector): (b, p, d)."""
        return self.expand_one(self.linear.weight.new_zeros(batch_size, self.linear.in_features))

    def forward(self, y: torch.Tensor, first: torch.Tensor = None):
        """Args:
            y: (b, m, d * expand) pooled outputs.
            first: (b, p, d) the vectors for the first window (the carry from an earlier call).
        Returns:
            x: (b, m * p, d), the shifted up-sampling; and the carry for the next call (b, p, d).
        """
        b, m, _ = y.shape
        ups = self.linear(y).view(b, m, self.pool, self.d_model)  # (b, m, p, d)
        if first is None:
            first = self.first(b)
        shifted = torch.cat([first.unsqueeze(1).to(ups.dtype), ups[:, :-1]], dim=1)
        return shifted.reshape(b, m * self.pool, self.d_model), ups[:, -1]


class UNet(nn.Module):
    """One U-Net stage (and, recursively, all the deeper ones).

    Args:
        config: a MambaConfig with backbone="unet".
        depth: index into config.unet_pool; the width here is d_model * unet_expand**depth.
    Shape:
        forward: (b, L, d) -> (b, L, d) with L a multiple of prod(unet_pool[depth:]);
        step: (b, d) -> (b, d)
    """

    def __init__(self, config, depth: int = 0):
        super().__init__()
        d = config.d_model * config.unet_expand ** depth
        self.pool_factor = config.unet_pool[depth]
        self.down = Stack(config, d, config.n_layer)
        self.pool = DownPool(d, self.pool_factor, config.unet_expand)
        if depth + 1 < len(config.unet_pool):
            self.inner = UNet(config, depth + 1)
        else:
            self.inner = Stack(config, d * config.unet_expand, config.n_layer)
        self.unpool = UpPool(d, self.pool_factor, config.unet_expand)
        self.up = Stack(config, d, config.n_layer)

    def forward(self, x: torch.Tensor, state: UNetState = None) -> torch.Tensor:
        """Parallel mode. With `state`, start from it and leave it at the end of x."""
        if state is None:
            x = self.down(x)  # (b, L, d)
            up, _ = self.unpool(self.inner(self.pool(x)))  # (b, L, d)
            return self.up(x + up)
        x = self.down(x, state.down)
        y = self.inner(self.pool(x), state.inner)  # (b, L/p, d * expand)
        up, carry = self.unpool(y, state.up_buf if state.pos > 0 else None)
        x = self.up(x + up, state.up)
        # a compact copy: the view would keep the whole up-sampled sequence alive
        state.up_buf = carry.float().clone(memory_format=torch.contiguous_format)
        state.pos += x.shape[1]
        return x

    def step(self, x: torch.Tensor, state: UNetState) -> torch.Tensor:
        """Recurrent mode: one time step (b, d) -> (b, d); `state` updated in place."""
        x = self.down.step(x, state.down)
        r = state.pos % self.pool_factor
        state.down_buf[:, r] = x
        out = self.up.step(x + state.up_buf[:, r], state.up)
        if r == self.pool_factor - 1:
            b = x.shape[0]
            y = self.pool.linear(state.down_buf.reshape(b, -1).to(x.dtype))  # (b, d * expand)
            y = self.inner.step(y, state.inner)
            state.up_buf.copy_(self.unpool.expand_one(y))
        state.pos += 1
        return out

    def set_position(self, state: UNetState, position: int) -> None:
        """Set the step counters of this and the deeper stages as after `position` steps.

        The counters only say where each pooling window stands (the tensors are untouched);
        replaying a CUDA graph captured at one phase of the cycle relies on this.
        """
        state.pos = position
        if isinstance(self.inner, UNet):
            self.inner.set_position(state.inner, position // self.pool_factor)

    def allocate_state(self, batch_size: int, device=None) -> UNetState:
        device = device or self.pool.linear.weight.device
        with torch.no_grad():
            up_buf = self.unpool.first(batch_size).float().to(device)
        return UNetState(
            down=self.down.allocate_state(batch_size, device),
            up=self.up.allocate_state(batch_size, device),
            inner=self.inner.allocate_state(batch_size, device),
            down_buf=torch.zeros_like(up_buf),
            up_buf=up_buf,
        )
