"""The one training loop that every pipeline shares.

Usage::

    trainer = Trainer(model, loss_fn, train_data, val_data, cfg, out_dir)
    result = trainer.fit()                    # or trainer.fit(resume="runs/x/checkpoints/last")
    val = trainer.evaluate(test_data)         # {"loss": ..., "<metric>": ...}

`loss_fn(model, batch) -> LossOutput` computes the loss of one (collated) batch. The trainer owns
everything else: AdamW with parameter groups (no weight decay for parameters flagged
`_no_weight_decay` and for 1-D ones: A_log, D, norms, biases), linear warm-up then cosine decay,
gradient clipping and accumulation, bf16 autocast on CUDA (fp32 master weights), sequence-length
warm-up stages, periodic evaluation, `last` and `best` checkpoints written atomically, exact resume,
a checkpoint on SIGINT/SIGTERM, a clear stop on a NaN/inf loss, DistributedDataParallel under
`torchrun`, a tqdm bar with tokens/s, `metrics.csv` (and TensorBoard when installed) and a loss
curve PNG.

Data order is owned by the trainer, not by a DataLoader sampler: epoch `e` visits the indices of a
permutation seeded by `(seed, e)`, sharded over ranks, and the number of items already consumed in
the epoch is saved with the checkpoint. Datasets that draw random windows get `set_epoch(e)`, and
datasets whose window length can change get `set_seq_len(L)`; together with the saved RNG states
this makes a resumed run log exactly the losses of an uninterrupted one (on the same device).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import math
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from mamba_bio_audio.cpu import fast_cpu_math
from mamba_bio_audio.errors import CheckpointError, ConfigError, UserError
from mamba_bio_audio.modules import context_parallel
from mamba_bio_audio.modules.context_parallel import context_parallel as context_parallel_scope
from mamba_bio_audio.modules.context_parallel import new_groups as new_context_groups

from .checkpoint import atomic_save_dir, check_checkpoint
from .distributed import (
    full_optimizer_state,
    full_state_dict,
    gradient_sync,
    is_sharded,
    load_full_optimizer_state,
    load_full_weights,
    plain_replica,
    shard_model,
)

TRAINER_STATE = "trainer_state.pt"
MAX_SKIPPED_IN_A_ROW = 10  # train.skip_nonfinite: more non-finite batches in a row stop the run


@dataclass
class TrainConfig:
    """The `train:` section of a run config.

    `steps` counts optimizer steps; each one sees `batch_size * grad_accum * world_size` items.
    `seq_len_stages` is a list of `[start_step, seq_len]` or `[start_step, seq_len, batch_size]`:
    from `start_step` on, the training windows have length `seq_len` (sequence-length warm-up; the
    dataset must provide `set_seq_len`). `precision`: "auto" (bf16 autocast on CUDA, fp32 on CPU),
    "bf16" or "fp32". `eval_batches` <= 0 evaluates the whole validation set.
    `save_every`: write `checkpoints/last` every N steps (0: at every evaluation, every
    `eval_every` steps), besides the end of training and SIGINT/SIGTERM.
    `fsdp`: under torchrun, shard the weights, gradients and optimizer state over the ranks
    (FSDP2, one unit per Mamba block) instead of replicating the model (DDP); checkpoints are
    gathered into ordinary model folders.
    `context_parallel`: under torchrun, split every sequence into this many contiguous slices, one
    per rank of a group (consecutive ranks), for sequences too long for one device; the groups
    are data-parallel replicas (world = groups x context_parallel). Causal isotropic models only;
    the window length must divide by it (see modules/context_parallel.py).
    `skip_nonfinite`: a step whose loss or gradient norm is NaN/inf is skipped (no update; at most
    `MAX_SKIPPED_IN_A_ROW` in a row) instead of stopping the run with TrainingDiverged.
    """

    steps: int = 200
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 20
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    eval_every: int = 50
    eval_batches: int = 0
    eval_batch_size: int = 0
    log_every: int = 10
    save_every: int = 0
    seq_len_stages: list[list[int]] = field(default_factory=list)
    best_metric: str = "loss"
    best_mode: str = "min"
    seed: int = 0
    precision: str = "auto"
    device: str = "auto"
    skip_nonfinite: bool = False
    fsdp: bool = False
    context_parallel: int = 1
    progress: bool = True

    def validate(self) -> None:
        """Raise ConfigError on values that cannot work (names the `train.<key>`)."""
        for key in ("steps", "batch_size", "grad_accum", "log_every", "context_parallel"):
            if getattr(self, key) < 1:
                raise ConfigError(f"train.{key} must be >= 1, got {getattr(self, key)}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ConfigError(f"train.precision must be auto, bf16 or fp32, got {self.precision!r}")
        resolve_device(self.device)
        if self.best_mode not in ("min", "max"):
            raise ConfigError(f"train.best_mode must be min or max, got {self.best_mode!r}")
        last = -1
        for stage in self.seq_len_stages:
            if not isinstance(stage, (list, tuple)) or len(stage) not in (2, 3):
                raise ConfigError(
                    f"train.seq_len_stages entries must be [start_step, seq_len] or "
                    f"[start_step, seq_len, batch_size], got {stage!r}")
            if stage[0] <= last:
                raise ConfigError("train.seq_len_stages must have increasing start steps")
            if stage[0] < 0 or min(stage[1:]) < 1:
                raise ConfigError(f"train.seq_len_stages entry {stage!r}: expected a start step "
                                  ">= 0, a seq_len >= 1 and a batch size >= 1")
            last = stage[0]


@dataclass
class LossOutput:
    """What a loss function returns for one batch.

    loss: the scalar the optimizer sees, a mean over `weight` items.
    weight: how many items the mean is over (target tokens for an LM, examples for a classifier).
    tokens: how many input tokens the batch held (for tokens/s and `tokens_seen`).
    sums: extra metrics as sums over the batch; `evaluate` divides them by the total weight
        (e.g. {"accuracy": number_correct}).
    """

    loss: torch.Tensor
    weight: float
    tokens: int
    sums: dict = field(default_factory=dict)


@dataclass
class FitResult:
    """What `Trainer.fit` returns."""

    step: int
    tokens_seen: int
    wall_seconds: float
    tokens_per_second: float
    best_value: float | None
    best_dir: Path | None
    last_dir: Path
    history: list


@contextlib.contextmanager
def _closing(bar):
    """Close a tqdm bar however the block ends, so that an error message gets a line of its own."""
    try:
        yield bar
    finally:
        bar.close()


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM arrived; a `last` checkpoint was written before raising this."""


def resolve_device(name: str = "auto") -> torch.device:
    """"auto" picks the local CUDA device (LOCAL_RANK under torchrun) when there is one, else CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"train.device: {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} was asked for, but no CUDA GPU is available here; "
                          "use train.device=cpu (or auto)")
    return device


def setup_distributed(device: torch.device) -> tuple[int, int]:
    """Join the process group when launched by torchrun (gloo on CPU, nccl on CUDA).

    Returns (rank, world_size); (0, 1) when not distributed.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def context_group(cfg: TrainConfig, world: int, model: torch.nn.Module):
    """This rank's context-parallel group for `train.context_parallel` > 1 (None otherwise);
    ConfigError where it cannot work."""
    n = cfg.context_parallel
    if n == 1:
        return None
    if world % n:
        raise ConfigError(f"train.context_parallel={n} needs torchrun with a multiple of {n} "
                          f"processes (--nproc_per_node), got {world}")
    config = getattr(model, "config", None)
    if config is not None and config.backbone == "unet":
        raise ConfigError(f"train.context_parallel={n}: the U-Net pools across slice boundaries; "
                          f"context parallelism needs model.backbone=isotropic")
    if config is not None and config.bidirectional:
        raise ConfigError(f"train.context_parallel={n}: a bidirectional model reads the future "
                          f"of every slice; context parallelism needs model.bidirectional=false")
    if cfg.fsdp:
        raise ConfigError(f"train.context_parallel={n} with train.fsdp=true is not supported; "
                          f"use one of the two")
    return new_context_groups(n)


def is_main_process() -> bool:
    """Rank 0, or not distributed (torchrun's RANK counts before the process group exists)."""
    if dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def log(msg: str) -> None:
    """Print a progress message to stderr, on rank 0 only."""
    if is_main_process():
        print(msg, file=sys.stderr, flush=True)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay for matrices, none for `_no_weight_decay` or 1-D parameters."""
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


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def move_to(batch: Any, device: torch.device) -> Any:
    """Move every tensor of a (nested) batch to `device`."""
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to(v, device) for v in batch)
    return batch


def find_checkpoint(path: str | Path) -> Path:
    """Resolve `--resume DIR`: a checkpoint folder, or a run folder (uses checkpoints/last)."""
    path = Path(path)
    candidates = [path, path / "checkpoints" / "last", path.with_name(path.name + ".old"),
                  path / "checkpoints" / "last.old"]
    for cand in candidates:
        if (cand / TRAINER_STATE).is_file():
            return cand
    raise CheckpointError(
        f"--resume {path}: no {TRAINER_STATE} there nor in {path}/checkpoints/last; "
        f"give a run folder or one of its checkpoints/last|best folders")


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
    indices = list(range(data_rank, len(data), data_world))
    loader = DataLoader(torch.utils.data.Subset(data, indices), batch_size=batch_size,
                        shuffle=False, collate_fn=collate_fn)
    totals: dict[str, float] = {}
    n_batches = len(loader) if max_batches <= 0 else min(max_batches, len(loader))
    with torch.no_grad():
        bar = tqdm(loader, total=n_batches, desc=desc, leave=False,
                   disable=not (progress and rank == 0))
        for i, batch in enumerate(bar):
            if i >= n_batches:
                break
            with autocast():
                out = loss_fn(model, move_to(batch, device))
            totals["loss"] = totals.get("loss", 0.0) + float(out.loss) * out.weight
            totals["weight"] = totals.get("weight", 0.0) + out.weight
            totals["tokens"] = totals.get("tokens", 0.0) + out.tokens
            for k, v in out.sums.items():
                totals[k] = totals.get(k, 0.0) + float(v)
        if is_sharded(model):  # FSDP gathers weights in every forward: all ranks run as many
            done = min(n_batches, len(loader))
            most = torch.tensor([done], device=device if device.type == "cuda" else "cpu")
            dist.all_reduce(most, op=dist.ReduceOp.MAX)
            spare = (collate_fn or torch.utils.data.default_collate)([data[0]])
            for _ in range(int(most) - done):  # forwards whose results are dropped
                with autocast():
                    loss_fn(model, move_to(spare, device))
    if dist.is_initialized():
        keys = sorted(totals)
        t = torch.tensor([totals[k] for k in keys], dtype=torch.float64,
                         device=device if device.type == "cuda" else "cpu")
        dist.all_reduce(t)
        totals = dict(zip(keys, t.tolist()))
    model.train(was_training)
    weight = totals.get("weight", 0.0)
    if weight == 0:
        raise UserError("evaluation set is empty: no batches to evaluate")
    result = {k: v / weight for k, v in totals.items() if k not in ("weight", "tokens")}
    result["weight"], result["tokens"] = weight, totals["tokens"]
    return result


class _SignalCatcher:
    """Turns SIGINT/SIGTERM into a flag the loop checks after each step (main thread only)."""

    def __init__(self):
        self.caught: int | None = None
        self._previous = {}

    def __enter__(self):
        if threading_main():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.caught is not None:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.caught = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


def threading_main() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


class Trainer:
    """Train `model` with `loss_fn` on `train_data`, evaluating on `val_data`, writing to `out_dir`.

    Args:
        model: an nn.Module with `save_pretrained(dir)` (checkpoints are written with it).
        loss_fn: `loss_fn(model, batch) -> LossOutput`; `batch` is the collated batch on the device.
        train_data, val_data: map-style datasets (val_data may be None: no evaluation).
        cfg: a TrainConfig.
        out_dir: the run folder; the trainer writes `metrics.csv`, `loss_curve.png` and
            `checkpoints/{last,best}` there (rank 0 only).
        collate_fn: passed to the DataLoader.
        extra_files: {name: text} written into every checkpoint folder beside the model.
    """

    def __init__(self, model: torch.nn.Module, loss_fn: Callable, train_data: Dataset,
                 val_data: Dataset | None, cfg: TrainConfig, out_dir: str | Path,
                 collate_fn: Callable | None = None, extra_files: dict | None = None):
        cfg.validate()
        if len(train_data) == 0:
            raise UserError("the training set is empty")
        if cfg.seq_len_stages and not hasattr(train_data, "set_seq_len"):
            raise ConfigError(f"train.seq_len_stages={cfg.seq_len_stages}: the windows of this "
                              f"dataset ({type(train_data).__name__}) have one length; use "
                              "train.seq_len_stages=[]")
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        if self.device.type == "cpu":
            fast_cpu_math()
        self.rank, self.world = setup_distributed(self.device)
        self.cp = context_group(cfg, self.world, model)
        cp_size = self.cp.size if self.cp else 1
        self.data_rank, self.data_world = self.rank // cp_size, self.world // cp_size
        self.out_dir = Path(out_dir)
        self.loss_fn = loss_fn
        self.train_data, self.val_data = train_data, val_data
        self.collate_fn = collate_fn
        self.extra_files = extra_files or {}
        self.model = model.to(self.device)
        self.raw_model = model
        if self.world > 1 and cfg.fsdp:
            self.model = shard_model(self.model)
        elif self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.optimizer = torch.optim.AdamW(
            param_groups(self.raw_model, cfg.weight_decay), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
            fused=self.device.type == "cuda")
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: warmup_cosine(s, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio))
        use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and self.device.type == "cuda")
        self.amp_dtype = torch.bfloat16 if use_bf16 else None
        self.step = 0
        self.epoch = 0
        self.position = 0  # items of the current epoch already consumed by this rank
        self.tokens_seen = 0
        self.best_value: float | None = None
        self.history: list[dict] = []
        self.skipped_steps = 0
        self.skipped_in_a_row = 0
        self._tb = None

    def autocast(self):
        """The autocast context for forward passes (bf16 on CUDA by default, none on CPU)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def stage_at(self, step: int) -> tuple[int | None, int]:
        """(seq_len or None, batch_size) in force at `step`."""
        seq_len, batch = None, self.cfg.batch_size
        for stage in self.cfg.seq_len_stages:
            if step >= stage[0]:
                seq_len = int(stage[1])
                batch = int(stage[2]) if len(stage) == 3 else self.cfg.batch_size
        return seq_len, batch

    def _apply_stage(self, seq_len: int | None) -> None:
        if seq_len is None:
            return
        self.train_data.set_seq_len(seq_len)

    def _epoch_order(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.cfg.seed * 100_003 + epoch)
        perm = torch.randperm(len(self.train_data), generator=g).tolist()
        return perm[self.data_rank::self.data_world]  # the ranks of a context group share items

    def _batches(self):
        """Yield (batch, seq_len) forever, continuing from (epoch, position)."""
        current_len = None
        while True:
            if hasattr(self.train_data, "set_epoch"):
                self.train_data.set_epoch(self.epoch)
            order = self._epoch_order(self.epoch)
            if not order:
                raise UserError("the training set has fewer items than there are ranks")
            while True:
                seq_len, batch_size = self.stage_at(self.step)
                if seq_len != current_len:
                    self._apply_stage(seq_len)
                    current_len = seq_len
                if self.position + batch_size > len(order):
                    break  # drop the ragged end of the epoch
                idx = order[self.position:self.position + batch_size]
                items = [self.train_data[i] for i in idx]
                self.position += batch_size
                batch = (self.collate_fn or torch.utils.data.default_collate)(items)
                yield batch
            if self.position == 0:
                raise UserError(f"the training set ({len(self.train_data)} items) is smaller "
                                f"than one batch ({self.stage_at(self.step)[1]} per rank)")
            self.epoch += 1
            self.position = 0

    def fit(self, resume: str | Path | None = None) -> FitResult:
        """Train for `cfg.steps` optimizer steps (continuing a checkpoint when `resume` is given)."""
        cfg = self.cfg
        seed_everything(cfg.seed + self.rank)
        if resume is not None:
            self.load_checkpoint(find_checkpoint(resume))
        main = self.rank == 0
        if main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self._open_tensorboard()
        with context_parallel_scope(self.cp):
            return self._fit(main)

    def _fit(self, main: bool) -> FitResult:
        cfg = self.cfg
        self.model.train()
        batches = self._batches()
        start_time = time.perf_counter()
        start_tokens, start_step = self.tokens_seen, self.step
        window_t, window_tok = time.perf_counter(), 0
        bar = tqdm(total=cfg.steps, initial=self.step, desc="train", dynamic_ncols=True,
                   disable=not (main and cfg.progress), file=sys.stderr)
        with _SignalCatcher() as signals, _closing(bar):
            while self.step < cfg.steps:
                loss_sum, weight_sum = 0.0, 0.0
                for micro in range(cfg.grad_accum):
                    batch = move_to(next(batches), self.device)
                    sync = micro == cfg.grad_accum - 1 or self.world == 1
                    with gradient_sync(self.model, sync):
                        with self.autocast():
                            out = self.loss_fn(self.model, batch)
                        (out.loss / cfg.grad_accum).backward()
                    loss_sum += float(out.loss.detach()) * out.weight
                    weight_sum += out.weight
                    self.tokens_seen += out.tokens * self.world
                    window_tok += out.tokens * self.world
                stop = signals.caught is not None
                if self.world > 1:  # the mean over every rank's items, as one process logs it;
                    # a signal any rank caught stops every rank after this same step
                    sums = torch.tensor([loss_sum, weight_sum, float(stop)], dtype=torch.float64,
                                        device=self.device if self.device.type == "cuda" else "cpu")
                    dist.all_reduce(sums)
                    loss_sum, weight_sum, stop = *sums[:2].tolist(), bool(sums[2] > 0)
                loss = loss_sum / max(weight_sum, 1e-12)
                grad_norm = torch.nn.utils.clip_grad_norm_(
                    self.model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
                if not (math.isfinite(loss) and math.isfinite(float(grad_norm))):
                    self.optimizer.zero_grad(set_to_none=True)
                    self._on_nonfinite(loss, float(grad_norm))  # raises unless skipping
                    continue
                self.skipped_in_a_row = 0
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                lr = self.scheduler.get_last_lr()[0]
                self.scheduler.step()
                self.step += 1
                bar.update(1)
                row = None
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    elapsed = time.perf_counter() - window_t
                    tps = window_tok / max(elapsed, 1e-9)
                    window_t, window_tok = time.perf_counter(), 0
                    row = {"step": self.step, "epoch": self.epoch, "tokens": self.tokens_seen,
                           "lr": lr, "train_loss": loss, "grad_norm": float(grad_norm),
                           "tokens_per_s": tps, "seq_len": self.stage_at(self.step - 1)[0] or ""}
                    bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tps:,.0f}")
                if self.val_data is not None and cfg.eval_every > 0 and (
                        self.step % cfg.eval_every == 0 or self.step == cfg.steps):
                    val = self.evaluate(self.val_data, max_batches=cfg.eval_batches)
                    row = row or {"step": self.step, "epoch": self.epoch, "tokens": self.tokens_seen}
                    row.update({f"val_{k}": v for k, v in val.items()
                                if k not in ("weight", "tokens")})
                    self._maybe_save_best(val)  # every rank: the save is a collective
                if row is not None and main:
                    self._log(row)
                every = cfg.save_every if cfg.save_every > 0 else cfg.eval_every
                if every > 0 and self.step % every == 0:
                    self.save_checkpoint(self.out_dir / "checkpoints" / "last")
                if stop or (self.world == 1 and signals.caught is not None):
                    bar.close()
                    self._on_interrupt(signals.caught or signal.SIGTERM)
        bar.close()
        wall = time.perf_counter() - start_time
        self.save_checkpoint(self.out_dir / "checkpoints" / "last")
        if main:
            self.plot()
            if self._tb is not None:
                self._tb.close()
        best_dir = self.out_dir / "checkpoints" / "best"
        return FitResult(
            step=self.step, tokens_seen=self.tokens_seen, wall_seconds=wall,
            tokens_per_second=(self.tokens_seen - start_tokens) / max(wall, 1e-9)
            if self.step > start_step else 0.0,
            best_value=self.best_value, best_dir=best_dir if best_dir.exists() else None,
            last_dir=self.out_dir / "checkpoints" / "last", history=self.history)

    def evaluate(self, data: Dataset, max_batches: int = 0, desc: str = "eval") -> dict:
        """Average loss and metrics of `loss_fn` over `data` with the current model."""
        bs = self.cfg.eval_batch_size or self.cfg.batch_size
        with context_parallel_scope(self.cp):
            return evaluate(self.model, self.loss_fn, data, bs, self.device, self.collate_fn,
                            max_batches, self.autocast, progress=self.cfg.progress, desc=desc)

    def restore_best(self) -> bool:
        """Load the weights of checkpoints/best into the model; False when there is none."""
        from safetensors.torch import load_model  # handles tied weights (stored once)

        if dist.is_initialized():
            dist.barrier()  # rank 0 may still be writing it
        best = self.out_dir / "checkpoints" / "best" / "model.safetensors"
        if not best.is_file():
            return False
        if is_sharded(self.model):
            load_full_weights(self.model, best)
        else:
            load_model(self.raw_model, best, device=str(self.device))
        return True

    def _maybe_save_best(self, val: dict) -> None:
        key = self.cfg.best_metric
        if key not in val:
            raise ConfigError(f"train.best_metric={key!r} is not an evaluation metric; "
                              f"choose from {', '.join(k for k in val if k not in ('weight', 'tokens'))}")
        value = val[key]
        better = (self.best_value is None or
                  (value < self.best_value if self.cfg.best_mode == "min" else value > self.best_value))
        if better:
            self.best_value = value
            self.save_checkpoint(self.out_dir / "checkpoints" / "best")

    def _on_nonfinite(self, loss: float, grad_norm: float) -> None:
        """A NaN/inf loss or gradient norm: skip the batch (train.skip_nonfinite) or stop."""
        what, value = (("loss", loss) if not math.isfinite(loss) else ("gradient norm", grad_norm))
        step = self.step + 1
        if self.cfg.skip_nonfinite and self.skipped_in_a_row < MAX_SKIPPED_IN_A_ROW:
            self.skipped_steps += 1
            self.skipped_in_a_row += 1
            log(f"warning: the training {what} is {value} at step {step}; batch skipped, no update "
                f"(train.skip_nonfinite=true; {self.skipped_steps} skipped so far)")
            return
        lr = self.scheduler.get_last_lr()[0]
        bf16 = self.amp_dtype is not None
        repeated = (f" for {MAX_SKIPPED_IN_A_ROW + 1} batches in a row"
                    if self.cfg.skip_nonfinite else "")
        checkpoint = self._last_good_checkpoint()
        advice = [f"lower train.lr (now {self.cfg.lr:g}) or train.grad_clip"]
        if bf16:
            advice.append("try train.precision=fp32")
        if not self.cfg.skip_nonfinite:
            advice.append("set train.skip_nonfinite=true to skip such batches")
        then = (f", then resume with --resume {self.out_dir}" if checkpoint.startswith("the last")
                else " and start again")
        raise TrainingDiverged(
            f"the training {what} became {value} at step {step}{repeated} (lr {lr:.3g}, "
            f"precision {'bf16 autocast' if bf16 else 'fp32'}); {checkpoint}. "
            f"{'; '.join(advice).capitalize()}{then}")

    def _last_good_checkpoint(self) -> str:
        """Where the newest checkpoint on disk is, and its step (for the divergence message);
        starts with "the last" when there is one."""
        found = []
        for name in ("last", "best"):
            folder = self.out_dir / "checkpoints" / name
            if (folder / TRAINER_STATE).is_file():
                try:
                    found.append((check_checkpoint(folder)["step"], folder))
                except CheckpointError:
                    continue
        if not found:
            return "no checkpoint was written yet (train.save_every=N writes one every N steps)"
        step, folder = max(found, key=lambda t: t[0])
        return f"the last good checkpoint is {folder} (step {step})"

    def _on_interrupt(self, signum: int) -> None:
        name = signal.Signals(signum).name
        last = self.out_dir / "checkpoints" / "last"
        self.save_checkpoint(last)  # every rank: the save is a collective
        if self.rank == 0:
            self.plot()
            print(f"\n{name}: saved a checkpoint at step {self.step} to {last}; continue with "
                  f"--resume {self.out_dir}", file=sys.stderr)
        raise TrainingInterrupted(name)

    def state_dict(self) -> dict:
        """Everything besides the weights that an exact resume needs.

        A collective under torchrun (every rank calls it): the RNG states of all ranks are
        gathered (a list, one per rank), and with FSDP the optimizer state in full.
        """
        sharded = is_sharded(self.model)
        optimizer = (full_optimizer_state(self.model, self.optimizer) if sharded
                     else self.optimizer.state_dict())
        rng = rng_state()
        if self.world > 1:
            every_rank = [None] * self.world
            dist.all_gather_object(every_rank, rng)
            rng = every_rank
        return {"step": self.step, "epoch": self.epoch, "position": self.position,
                "tokens_seen": self.tokens_seen, "best_value": self.best_value,
                "optimizer": optimizer, "scheduler": self.scheduler.state_dict(),
                "rng": rng, "world_size": self.world, "fsdp": sharded,
                "context_parallel": self.cp.size if self.cp else 1,
                "train_config": dataclasses.asdict(self.cfg)}

    def save_checkpoint(self, path: Path) -> None:
        """Write the model (save_pretrained), extra files and trainer_state.pt, atomically.

        Every rank calls it at the same step; rank 0 writes. With FSDP the weights are gathered
        into a full CPU replica first, so the folder is an ordinary checkpoint.
        """
        sharded = is_sharded(self.model)
        weights = full_state_dict(self.model) if sharded else None
        state = self.state_dict()
        if self.rank != 0:
            return
        model = plain_replica(self.raw_model, weights) if sharded else self.raw_model

        def write(tmp: Path) -> None:
            model.save_pretrained(tmp)
            for name, text in self.extra_files.items():
                (tmp / name).write_text(text)
            torch.save(state, tmp / TRAINER_STATE)

        atomic_save_dir(path, write)

    def load_checkpoint(self, path: Path) -> None:
        """Load weights and trainer state from a checkpoint written by `save_checkpoint`."""
        from safetensors.torch import load_model  # handles tied weights (stored once)

        weights = path / "model.safetensors"
        state = check_checkpoint(path)  # CheckpointError naming a missing or unreadable file
        sharded = is_sharded(self.model)
        if state.get("fsdp", False) != sharded:
            raise CheckpointError(f"--resume {path}: saved with train.fsdp="
                                  f"{str(state.get('fsdp', False)).lower()}; resume with the same")
        try:
            if sharded:
                load_full_weights(self.model, weights)
                missing, unexpected = [], []
            else:
                missing, unexpected = map(sorted, load_model(self.raw_model, weights,
                                                             strict=False))
        except (RuntimeError, KeyError) as err:
            lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
            detail = next((ln for ln in lines if "mismatch" in ln), lines[0] if lines else "")
            raise CheckpointError(f"--resume {path}: the weights do not fit this model; was it "
                                  f"trained with other model.* settings? ({detail})") from None
        if missing or unexpected:
            raise CheckpointError(f"--resume {path}: the weights do not fit this model "
                                  f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        saved_cp, cp = state.get("context_parallel", 1), self.cp.size if self.cp else 1
        if saved_cp != cp:
            raise CheckpointError(f"--resume {path}: saved with train.context_parallel={saved_cp}; "
                                  f"resume with the same (got {cp})")
        if state.get("world_size", 1) != self.world:
            raise CheckpointError(f"--resume {path}: saved with {state['world_size']} ranks, "
                                  f"resumed with {self.world}; the data order would differ")
        if sharded:
            load_full_optimizer_state(self.model, self.optimizer, state["optimizer"])
        else:
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.epoch, self.position = state["step"], state["epoch"], state["position"]
        self.tokens_seen, self.best_value = state["tokens_seen"], state["best_value"]
        rng = state["rng"]
        set_rng_state(rng[self.rank] if isinstance(rng, list) else rng)
        self.history = [r for r in read_metrics(self.out_dir / "metrics.csv")
                        if int(r["step"]) <= self.step]

    def _open_tensorboard(self) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return
        self._tb = SummaryWriter(log_dir=str(self.out_dir / "tensorboard"))

    def _log(self, row: dict) -> None:
        self.history.append(row)
        write_metrics(self.out_dir / "metrics.csv", self.history)
        if self._tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, row["step"])

    def plot(self) -> None:
        """Write loss_curve.png (train and validation loss against step)."""
        if self.history:
            plot_loss_curve(self.history, self.out_dir / "loss_curve.png")


def write_metrics(path: Path, rows: list[dict]) -> None:
    """Write rows as CSV (union of the columns, in first-seen order), atomically."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    os.replace(tmp, path)


def read_metrics(path: Path) -> list[dict]:
    """Read metrics.csv back (values as float where they parse); [] when there is none."""
    if not Path(path).is_file():
        return []
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            parsed = {}
            for k, v in row.items():
                if v == "":
                    continue
                try:
                    parsed[k] = float(v) if k != "step" else int(v)
                except ValueError:
                    parsed[k] = v
            rows.append(parsed)
    return rows


def plot_loss_curve(rows: list[dict], path: Path, ylabel: str = "loss (nats)", scale: float = 1.0,
                    lines: dict | None = None) -> None:
    """Plot train_loss and val_loss (times `scale`, e.g. 1/ln 2 for bits) against step into a PNG
    (written atomically), with horizontal `lines` {label: value} (e.g. a baseline)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        pts = [(r["step"], float(r[key]) * scale) for r in rows if key in r and r[key] != ""]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, label=label, marker="o" if key == "val_loss" else None, ms=3)
    for (label, value), color in zip((lines or {}).items(), ("tab:red", "tab:purple", "tab:gray")):
        ax.axhline(value, color=color, linestyle="--", linewidth=1, label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
