"""Context parallelism: one sequence split into contiguous slices over the ranks of a group.

For a recurrence only the state crosses a slice boundary. Rank r of a group of N needs from the
ranks before it (a) the last d_conv - 1 inputs of the causal conv, from rank r - 1, and (b) the
SSM state entering its slice. (b) needs no chain through the ranks: every rank scans its slice
from a zero state, giving its end state E_r and its total decay P_r = exp(A * sum of its Δ); one
all-gather of (E, P) gives every rank its true start state by a short scan over the N entries,

    H_0 = 0,   H_{j+1} = P_j H_j + E_j,

and each rank scans its slice again from H_r. The backward is the mirror image for free: the
all-gather's backward sends every rank the gradient that the later ranks' outputs put on its (E, P)
(and the conv tail's), so gradients equal the single-process ones. The collectives are
torch.distributed's (all_gather, all_reduce; gloo or NCCL), made differentiable here.

    with context_parallel(group):      # every rank of `group` holds its slice of the same batch
        logits = model(ids[:, r * S:(r + 1) * S])

Causal isotropic models only: the U-Net pools across slice boundaries and a bidirectional branch
reads the future (the trainer refuses both with a config error). The extra cost is one scan per
layer from a zero state and three small collectives per layer.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn

from ..errors import ConfigError


@dataclass(frozen=True)
class ContextGroup:
    """The ranks that share one sequence: `rank` holds slice number `rank` of `size`."""

    group: object  # a torch.distributed ProcessGroup
    rank: int
    size: int

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """Every rank's `t`, stacked in slice order: (size, *t.shape) (differentiable)."""
        return _Gather.apply(t, self)

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """The sum of every rank's `t` (differentiable)."""
        return dist_fn.all_reduce(t.contiguous(), op=dist.ReduceOp.SUM, group=self.group)

    # Every rank builds the same autograd graph (rank-dependent values, never rank-dependent
    # structure): the backward of each collective is then run by every rank, in the same order.
    # (A rank whose result did not use a gathered tensor would skip its backward, and the
    # others would wait for it forever.)

    def previous_tail(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """The last k positions (last dim) of the previous rank's x; zeros on the first rank."""
        if k == 0:
            return x[..., :0]
        if x.shape[-1] < k:
            raise ConfigError(f"context parallelism: a slice of {x.shape[-1]} positions is "
                              f"shorter than the conv's d_conv - 1 = {k}; use a longer sequence "
                              f"or fewer ranks")
        tails = self.gather(x[..., -k:])
        return tails[(self.rank - 1) % self.size] * float(self.rank > 0)

    def start_state(self, end_state: torch.Tensor, decay: torch.Tensor) -> torch.Tensor:
        """The state entering this rank's slice from every rank's (end state from zero, decay)."""
        ends, decays = self.gather(end_state), self.gather(decay)
        h = torch.zeros_like(end_state)
        for j in range(self.size - 1):
            before = float(j < self.rank)  # slice j precedes this one
            h = before * (decays[j] * h + ends[j]) + (1.0 - before) * h
        return h


class _Gather(torch.autograd.Function):
    """all_gather whose backward all-reduces the gradients and keeps this rank's share.

    (torch.distributed.nn.functional.all_gather's backward emulates reduce-scatter on gloo with
    scatters that take group ranks for global ones, so it fails on any group but the world.)"""

    @staticmethod
    def forward(ctx, t, cp):
        ctx.cp = cp
        out = [torch.empty_like(t) for _ in range(cp.size)]
        dist.all_gather(out, t.contiguous(), group=cp.group)
        return torch.stack(out)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.cp.group)
        return grad[ctx.cp.rank], None


_active: ContextGroup | None = None


def active() -> ContextGroup | None:
    """The context-parallel group in force, or None (every rank holds whole sequences)."""
    return _active


@contextmanager
def context_parallel(group: ContextGroup | None):
    """Run the enclosed forwards (and their backwards) with sequences split over `group`."""
    global _active
    previous, _active = _active, group
    try:
        yield group
    finally:
        _active = previous


def new_groups(size: int) -> ContextGroup:
    """Split the world into consecutive groups of `size` ranks (every rank must call this) and
    return this rank's. Data parallelism runs across the groups: world = groups x size."""
    world, rank = dist.get_world_size(), dist.get_rank()
    if world % size:
        raise ValueError(f"context parallelism over {size} ranks needs a world size divisible by "
                         f"{size}, got {world}")
    mine = None
    for first in range(0, world, size):
        ranks = list(range(first, first + size))
        g = dist.new_group(ranks)
        if rank in ranks:
            mine = ContextGroup(g, rank - first, size)
    return mine


def local_slice(t: torch.Tensor, cp: ContextGroup, dim: int = 1) -> torch.Tensor:
    """This rank's contiguous slice of `t` along `dim` (the length must divide evenly)."""
    n = t.shape[dim]
    if n % cp.size:
        raise ConfigError(f"train.context_parallel={cp.size}: a sequence of {n} positions does not "
                          f"split into {cp.size} equal slices; use a length (data.seq_len) "
                          f"divisible by {cp.size}")
    s = n // cp.size
    return t.narrow(dim, cp.rank * s, s)


__all__ = ["ContextGroup", "active", "context_parallel", "local_slice", "new_groups"]
