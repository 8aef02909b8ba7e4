"""The device a job runs on, and moving (nested) batches there."""

from __future__ import annotations

import os
from typing import Any

import torch

from mamba_bio_audio.cpu import fast_cpu_math
from mamba_bio_audio.errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """"auto" picks the local CUDA device (LOCAL_RANK under torchrun) when there is one, else CPU.
    ConfigError for a name torch does not know or a CUDA device that is not there.

    On the CPU, denormals are flushed to zero from here on (`mamba_bio_audio.cpu.fast_cpu_math`):
    a job resolves its device before its first multi-threaded torch op, which is when it must be
    set."""
    if name == "auto":
        cuda = torch.cuda.is_available()
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else None
    else:
        try:
            device = torch.device(name)
        except RuntimeError as err:
            raise ConfigError(f"train.device: {err}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} was asked for, but no CUDA GPU is available "
                              "here; use train.device=cpu (or auto)")
    device = device or torch.device("cpu")
    if device.type == "cpu":
        fast_cpu_math()
    return device


def move_to(batch: Any, device: torch.device) -> Any:
    """Move every tensor of a (nested) batch to `device`."""
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to(v, device) for v in batch)
    return batch


def reduce_device(device: torch.device) -> torch.device:
    """Where tensors for a collective live: the GPU under NCCL, the CPU under gloo."""
    return device if device.type == "cuda" else torch.device("cpu")
