"""`evaluate`: the mean loss and metrics of a loss function over a dataset."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from mamba_bio_audio.errors import UserError
from mamba_bio_audio.modules import context_parallel

from .device import move_to, reduce_device
from .distributed import is_sharded


def evaluate(model: torch.nn.Module, loss_fn: Callable, data: Dataset, batch_size: int,
             device: torch.device, collate_fn: Callable | None = None, max_batches: int = 0,
             autocast: Callable = contextlib.nullcontext, progress: bool = False,
             desc: str = "eval") -> dict:
    """Average `loss_fn` over a dataset (sharded over ranks when distributed).

    Returns {"loss": mean loss per weight unit, "<name>": sums[name] / total weight, "weight": ...,
    "tokens": ...}. The model is put back into training mode when it was in it.
    """
    was_training = model.training
    model.eval()
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    cp = context_parallel.active()
    data_rank, data_world = (rank // cp.size, world // cp.size) if cp else (rank, world)
    loader = DataLoader(torch.utils.data.Subset(data, range(data_rank, len(data), data_world)),
                        batch_size=batch_size, shuffle=False, collate_fn=collate_fn)
    n_batches = len(loader) if max_batches <= 0 else min(max_batches, len(loader))
    totals: dict[str, float] = {}
    with torch.no_grad():
        bar = tqdm(loader, total=n_batches, desc=desc, leave=False,
                   disable=not (progress and rank == 0))
        for i, batch in enumerate(bar):
            if i >= n_batches:
                break
            with autocast():
                out = loss_fn(model, move_to(batch, device))
            for k, v in {"loss": float(out.loss) * out.weight, "weight": out.weight,
                         "tokens": out.tokens, **out.sums}.items():
                totals[k] = totals.get(k, 0.0) + float(v)
        if is_sharded(model):
            _match_forwards(model, loss_fn, data, collate_fn, min(n_batches, len(loader)),
                            device, autocast)
    if dist.is_initialized():
        keys = sorted(totals)
        t = torch.tensor([totals[k] for k in keys], dtype=torch.float64,
                         device=reduce_device(device))
        dist.all_reduce(t)
        totals = dict(zip(keys, t.tolist()))
    model.train(was_training)
    weight = totals.get("weight", 0.0)
    if weight == 0:
        raise UserError("evaluation set is empty: no batches to evaluate")
    result = {k: v / weight for k, v in totals.items() if k not in ("weight", "tokens")}
    result["weight"], result["tokens"] = weight, totals["tokens"]
    return result


def _match_forwards(model, loss_fn, data, collate_fn, done: int, device, autocast) -> None:
    """FSDP gathers weights in every forward, so every rank must run as many: the ranks with
    fewer batches run forwards on a spare item whose results are dropped."""
    most = torch.tensor([done], device=reduce_device(device))
    dist.all_reduce(most, op=dist.ReduceOp.MAX)
    spare = (collate_fn or torch.utils.data.default_collate)([data[0]])
    for _ in range(int(most) - done):
        with autocast():
            loss_fn(model, move_to(spare, device))
