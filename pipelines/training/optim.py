"""AdamW with parameter groups, and the warm-up + cosine learning-rate schedule."""

from __future__ import annotations

import math

import torch

from .config import TrainConfig


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay for matrices, none for `_no_weight_decay` or 1-D parameters
    (A_log, D, norms, biases)."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if getattr(p, "_no_weight_decay", False) or p.ndim < 2:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """LR multiplier: linear warm-up to 1 over `warmup` steps, then cosine down to `min_ratio`."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device,
                    capturable: bool = False):
    """(AdamW, LambdaLR with `warmup_cosine`) for `model`'s parameters as `cfg` says; capturable
    in a CUDA graph when asked (see `set_capturable`)."""
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr,
                                  betas=(cfg.beta1, cfg.beta2), fused=device.type == "cuda")
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio))
    set_capturable(optimizer, capturable)
    return optimizer, scheduler


def set_capturable(optimizer: torch.optim.Optimizer, capturable: bool) -> None:
    """Make the optimizer's step capturable in a CUDA graph (or not): its `capturable` flag, and
    the learning rate a 0-d tensor on the parameters' device, which the scheduler overwrites in
    place, so that a replayed step uses the new rate (a float would be frozen into the graph).
    Called again after `load_state_dict`, which brings back the saved groups' values."""
    for group in optimizer.param_groups:
        lr = float(group["lr"])
        group["capturable"] = capturable
        if capturable and group["params"]:
            group["lr"] = torch.tensor(lr, dtype=torch.float32, device=group["params"][0].device)
        else:
            group["lr"] = lr


def portable_state(optimizer_state: dict) -> dict:
    """An optimizer state dict with its learning rates as floats, so that a checkpoint resumes
    the same with or without `train.cuda_graph` (FSDP's gathered state is empty off rank 0)."""
    for group in optimizer_state.get("param_groups", ()):
        group["lr"] = float(group["lr"])
    return optimizer_state
