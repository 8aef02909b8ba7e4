"""Sequence pooling that ignores padding, for classification heads."""

import torch

from ..config import POOLINGS
from ..errors import ConfigError
from ..kernels.selective_scan.checks import can_read_values
from . import context_parallel


def masked_pool(h: torch.Tensor, mask: torch.Tensor = None, mode: str = "mean") -> torch.Tensor:
    """Pool hidden states over time, using only the positions where `mask` is True.

    Args:
        h: (b, l, d) hidden states.
        mask: (b, l) bool, True at real tokens (left or right padding both work); None = all real.
        mode: "mean", "max" or "last" (the last real position: what a causal model has read in
            full).
    Returns:
        (b, d)
    """
    if mode not in POOLINGS:
        raise ConfigError(f"pooling={mode!r}: expected one of {', '.join(POOLINGS)}")
    if mask is None:
        mask = torch.ones(h.shape[:2], dtype=torch.bool, device=h.device)
    mask = mask.bool()
    if mask.shape != h.shape[:2]:
        raise ValueError(f"mask has shape {tuple(mask.shape)}; expected (batch, length) = "
                         f"{tuple(h.shape[:2])}")
    cp = context_parallel.active()
    if cp is not None:  # h and mask are this rank's slice: pool over every slice
        if mode != "mean":
            raise ConfigError(f"pooling={mode!r} under context parallelism: only mean pooling "
                              f"is split over the ranks; use model.pooling=mean")
        m = mask.unsqueeze(-1).to(h.dtype)
        count = cp.sum(m.sum(1))
        if can_read_values(count) and not bool((count > 0).all()):
            raise ValueError("mask: every sequence needs at least one real (True) position")
        return cp.sum((h * m).sum(1)) / count
    if can_read_values(mask) and not bool(mask.any(dim=1).all()):
        raise ValueError("mask: every sequence needs at least one real (True) position")
    if mode == "mean":
        m = mask.unsqueeze(-1).to(h.dtype)  # (b, l, 1)
        return (h * m).sum(1) / m.sum(1)
    if mode == "max":
        return h.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(1)
    L = h.shape[1]
    last = L - 1 - mask.flip(1).int().argmax(1)  # (b,) index of the last True
    return h[torch.arange(h.shape[0], device=h.device), last]  # (b, d)
