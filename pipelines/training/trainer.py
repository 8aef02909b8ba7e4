"""The one training loop that every training command shares.

Usage::

    trainer = Trainer(model, loss_fn, train_data, val_data, cfg, out_dir)
    result = trainer.fit()                    # or trainer.fit(resume="runs/x/checkpoints/last")
    val = trainer.evaluate(test_data)         # {"loss": ..., "<metric>": ...}

`loss_fn(model, batch) -> LossOutput` (losses.py) computes the loss of one (collated) batch. The
trainer owns everything else, each concern in its own module of this package: AdamW with
parameter groups and a warm-up + cosine schedule (optim.py), gradient clipping and accumulation,
bf16 autocast on CUDA (fp32 master weights), sequence-length warm-up stages, periodic evaluation
(evaluation.py), `last` and `best` checkpoints written atomically and exact resume
(checkpoint.py, rng.py), a checkpoint on SIGINT/SIGTERM (signals.py), a clear stop on a NaN/inf
loss, DDP/FSDP/context parallelism under `torchrun` (distributed.py), the whole step captured in a
CUDA graph on one GPU (`train.cuda_graph`, cuda_graph.py), a tqdm bar with tokens/s, `metrics.csv`,
TensorBoard and the loss curve (metrics.py).

Data order is owned by the trainer, not by a DataLoader sampler: epoch `e` visits the indices of a
permutation seeded by `(seed, e)`, sharded over ranks, and the number of items already consumed in
the epoch is saved with the checkpoint. Datasets that draw random windows get `set_epoch(e)`, and
datasets whose window length can change get `set_seq_len(L)`; together with the saved RNG states
this makes a resumed run log exactly the losses of an uninterrupted one (on the same device).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from mamba_bio_audio.errors import CheckpointError, ConfigError, UserError
from mamba_bio_audio.modules.context_parallel import context_parallel as context_parallel_scope

from .checkpoint import check_checkpoint, find_checkpoint, load_weights, newest_checkpoint
from .checkpoint import write_checkpoint
from .config import MAX_SKIPPED_IN_A_ROW, TrainConfig
from .cuda_graph import CaptureFailed, GraphedStep
from .device import move_to, reduce_device, resolve_device
from .distributed import (context_group, full_optimizer_state, gathered_model, gradient_sync,
                          is_sharded, load_full_optimizer_state, load_full_weights, log,
                          setup_distributed, wrap_model)
from .evaluation import evaluate
from .metrics import MetricsLog
from .optim import build_optimizer, portable_state, set_capturable
from .rng import rng_state, seed_everything, set_rng_state
from .signals import SignalCatcher


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


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM arrived; a `last` checkpoint was written before raising this."""


class Trainer:
    """Train `model` with `loss_fn` on `train_data`, evaluating on `val_data`, writing to `out_dir`.

    Args:
        model: an nn.Module with `save_pretrained(dir)` (checkpoints are written with it).
        loss_fn: `loss_fn(model, batch) -> LossOutput`; `batch` is the collated batch on the device.
        train_data, val_data: map-style datasets (val_data may be None: no evaluation).
        cfg: a TrainConfig.
        out_dir: the run folder; the trainer writes `metrics.csv`, `loss_curve.png` and
            `checkpoints/{last,best}` there (rank 0 only).
        collate_fn: how items become a batch (default: torch's default_collate).
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
        self.device = resolve_device(cfg.device)  # flushes denormals on the CPU
        if cfg.cuda_graph is True and self.device.type != "cuda":
            raise ConfigError(f"train.cuda_graph=true needs a CUDA GPU; this run is on "
                              f"{self.device.type} (set train.cuda_graph=false)")
        self.rank, self.world = setup_distributed(self.device)
        if cfg.cuda_graph is True and self.world > 1:
            raise ConfigError(f"train.cuda_graph=true runs on one GPU; under torchrun "
                              f"({self.world} ranks) set train.cuda_graph=false")
        graphed = cfg.cuda_graph is True or (
            cfg.cuda_graph == "auto" and self.device.type == "cuda" and self.world == 1)
        self.cp = context_group(cfg.context_parallel, self.world, model, cfg.fsdp)
        cp_size = self.cp.size if self.cp else 1
        self.data_rank, self.data_world = self.rank // cp_size, self.world // cp_size
        self.out_dir = Path(out_dir)
        self.loss_fn = loss_fn
        self.train_data, self.val_data = train_data, val_data
        self.collate_fn = collate_fn or torch.utils.data.default_collate
        self.extra_files = extra_files or {}
        self.raw_model = model.to(self.device)
        self.model = wrap_model(self.raw_model, self.world, cfg.fsdp, self.device)
        self.optimizer, self.scheduler = build_optimizer(self.raw_model, cfg, self.device, graphed)
        use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and self.device.type == "cuda")
        self.amp_dtype = torch.bfloat16 if use_bf16 else None
        self.step = 0
        self.epoch = 0
        self.position = 0  # items of the current epoch already consumed by this rank
        self.tokens_seen = 0
        self.best_value: float | None = None
        self.metrics = MetricsLog(self.out_dir)
        self.skipped_steps = 0
        self.skipped_in_a_row = 0
        self.graphed = (GraphedStep(self._graph_step, self.raw_model, self.optimizer)
                        if graphed else None)

    @property
    def history(self) -> list[dict]:
        return self.metrics.history

    def autocast(self, cache: bool = True):
        """The autocast context for forward passes (bf16 on CUDA by default, none on CPU);
        `cache=False` inside a CUDA-graph capture (autocast's weight-cast cache is not replayed)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype,
                              cache_enabled=cache)


    def _epoch_order(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.cfg.seed * 100_003 + epoch)
        perm = torch.randperm(len(self.train_data), generator=g).tolist()
        return perm[self.data_rank::self.data_world]  # the ranks of a context group share items

    def _batches(self):
        """Yield collated batches forever, continuing from (epoch, position); the window length
        follows `train.seq_len_stages`."""
        current_len = None
        while True:
            if hasattr(self.train_data, "set_epoch"):
                self.train_data.set_epoch(self.epoch)
            order = self._epoch_order(self.epoch)
            if not order:
                raise UserError("the training set has fewer items than there are ranks")
            while True:
                seq_len, batch_size = self.cfg.stage_at(self.step)
                if seq_len is not None and seq_len != current_len:
                    self.train_data.set_seq_len(seq_len)
                    current_len = seq_len
                if self.position + batch_size > len(order):
                    break  # drop the ragged end of the epoch
                idx = order[self.position:self.position + batch_size]
                self.position += batch_size
                yield self.collate_fn([self.train_data[i] for i in idx])
            if self.position == 0:
                raise UserError(f"the training set ({len(self.train_data)} items) is smaller "
                                f"than one batch ({self.cfg.stage_at(self.step)[1]} per rank)")
            self.epoch += 1
            self.position = 0


    def fit(self, resume: str | Path | None = None) -> FitResult:
        """Train for `cfg.steps` optimizer steps (continuing a checkpoint when `resume` is given)."""
        seed_everything(self.cfg.seed + self.rank)
        if resume is not None:
            self.load_checkpoint(find_checkpoint(resume))
        if self.rank == 0:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.metrics.open_tensorboard()
        with context_parallel_scope(self.cp):
            return self._fit()

    def _fit(self) -> FitResult:
        cfg, main = self.cfg, self.rank == 0
        self.model.train()
        batches = self._batches()
        start_time = time.perf_counter()
        start_tokens, start_step = self.tokens_seen, self.step
        self._window = [time.perf_counter(), 0]  # start and tokens of the tokens/s window
        bar = tqdm(total=cfg.steps, initial=self.step, desc="train", dynamic_ncols=True,
                   disable=not (main and cfg.progress), file=sys.stderr)
        with SignalCatcher() as signals, contextlib.closing(bar):
            while self.step < cfg.steps:
                step = self._replay if self.graphed is not None else self._eager_step
                loss, grad_norm, stop = step(batches, signals)
                if not (math.isfinite(loss) and math.isfinite(grad_norm)):
                    if self.graphed is None:  # a replay writes the gradients afresh
                        self.optimizer.zero_grad(set_to_none=True)
                    self._on_nonfinite(loss, grad_norm)  # raises unless skipping
                    continue
                lr = self._update()
                bar.update(1)
                row = self._train_row(loss, grad_norm, lr, bar)
                self._evaluate_and_save(row)
                if stop or (self.world == 1 and signals.caught is not None):
                    bar.close()
                    self._on_interrupt(signals.caught or signal.SIGTERM)
        wall = time.perf_counter() - start_time
        self.save_checkpoint(self.out_dir / "checkpoints" / "last")
        if main:
            self.metrics.plot()
            self.metrics.close()
        best_dir = self.out_dir / "checkpoints" / "best"
        return FitResult(
            step=self.step, tokens_seen=self.tokens_seen, wall_seconds=wall,
            tokens_per_second=(self.tokens_seen - start_tokens) / max(wall, 1e-9)
            if self.step > start_step else 0.0,
            best_value=self.best_value, best_dir=best_dir if best_dir.exists() else None,
            last_dir=self.out_dir / "checkpoints" / "last", history=self.history)

    def _eager_step(self, batches, signals: SignalCatcher) -> tuple[float, float, bool]:
        """Forward and backward over the next micro-batches, then clipping: (the mean loss, the
        gradient norm before clipping, whether to stop after this step)."""
        loss, stop = self._accumulate(batches, signals)
        return loss, float(self._clip_gradients()), stop

    def _forward_backward(self, batch, cache: bool = True):
        """The loss of one micro-batch (a LossOutput), its gradient added to `.grad`."""
        with self.autocast(cache):
            out = self.loss_fn(self.model, batch)
        (out.loss / self.cfg.grad_accum).backward()
        return out

    def _accumulate(self, batches, signals: SignalCatcher) -> tuple[float, bool]:
        """Forward and backward over `grad_accum` micro-batches (the gradients synchronised on
        the last). Returns (the mean loss over every rank's items, whether any rank caught a
        signal: then every rank stops after this same step)."""
        cfg = self.cfg
        loss_sum, weight_sum = 0.0, 0.0
        for micro in range(cfg.grad_accum):
            batch = move_to(next(batches), self.device)
            with gradient_sync(self.model, micro == cfg.grad_accum - 1 or self.world == 1):
                out = self._forward_backward(batch)
            weight = float(out.weight)
            loss_sum += float(out.loss.detach()) * weight
            weight_sum += weight
            self.tokens_seen += out.tokens * self.world
            self._window[1] += out.tokens * self.world
        stop = signals.caught is not None
        if self.world > 1:
            sums = torch.tensor([loss_sum, weight_sum, float(stop)], dtype=torch.float64,
                                device=reduce_device(self.device))
            dist.all_reduce(sums)
            loss_sum, weight_sum, stop = *sums[:2].tolist(), bool(sums[2] > 0)
        return loss_sum / max(weight_sum, 1e-12), stop

    def _clip_gradients(self) -> torch.Tensor:
        """Clip the gradients to `train.grad_clip` (0: no clipping); their norm before it."""
        clip = self.cfg.grad_clip if self.cfg.grad_clip > 0 else float("inf")
        return torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)

    def _graph_step(self, batches: list) -> tuple:
        """The whole step of `train.cuda_graph` (what GraphedStep captures): forward and backward
        over the micro-batches, clipping, and the AdamW step, which the optimizer skips (as a
        GradScaler's `found_inf` makes it) when the loss or gradient norm is not finite, so that
        the eager path's skip-or-stop decision still holds after the replay. Returns (the mean
        loss, the gradient norm, the input tokens) with the loss and norm as GPU tensors."""
        loss_sum = weight_sum = tokens = 0
        for batch in batches:
            out = self._forward_backward(batch, cache=False)
            loss_sum = loss_sum + out.loss.detach().float() * out.weight
            weight_sum = weight_sum + out.weight
            tokens += out.tokens
        loss = loss_sum / weight_sum
        grad_norm = self._clip_gradients()
        self.optimizer.found_inf = (~(loss.isfinite() & grad_norm.isfinite())).float()
        try:
            self.optimizer.step()
        finally:
            del self.optimizer.found_inf
        return loss, grad_norm, tokens

    def _replay(self, batches, signals: SignalCatcher) -> tuple[float, float, bool]:
        """One step of `train.cuda_graph`: the next micro-batches through the captured step
        (captured on the first call and when the window shape changes). Returns (the mean loss,
        the gradient norm, whether a signal was caught), like the eager path."""
        inputs = [next(batches) for _ in range(self.cfg.grad_accum)]
        try:
            loss, grad_norm, tokens = self.graphed(inputs)
        except CaptureFailed as err:
            if self.cfg.cuda_graph is True:
                raise ConfigError(f"train.cuda_graph=true: {err}; set train.cuda_graph=false"
                                  ) from None
            log(f"note: train.cuda_graph=auto: {err}; training without (eagerly)")
            self.graphed = None
            set_capturable(self.optimizer, False)
            return self._eager_step(iter(inputs), signals)
        self.tokens_seen += tokens
        self._window[1] += tokens
        return float(loss), float(grad_norm), signals.caught is not None

    def _update(self) -> float:
        """One optimizer and scheduler step (the optimizer's already ran inside the replay with
        `train.cuda_graph`); returns the learning rate the step used."""
        self.skipped_in_a_row = 0
        if self.graphed is None:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        lr = float(self.scheduler.get_last_lr()[0])
        self.scheduler.step()
        self.step += 1
        return lr

    def _train_row(self, loss: float, grad_norm: float, lr: float, bar) -> dict | None:
        """The metrics row of this step (every `log_every` steps and at the last), else None."""
        if self.step % self.cfg.log_every and self.step != self.cfg.steps:
            return None
        started, tokens = self._window
        tps = tokens / max(time.perf_counter() - started, 1e-9)
        self._window = [time.perf_counter(), 0]
        bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tps:,.0f}")
        return {"step": self.step, "epoch": self.epoch, "tokens": self.tokens_seen, "lr": lr,
                "train_loss": loss, "grad_norm": grad_norm, "tokens_per_s": tps,
                "seq_len": self.cfg.stage_at(self.step - 1)[0] or ""}

    def _evaluate_and_save(self, row: dict | None) -> None:
        """Evaluate every `eval_every` steps (keeping `best`), log the row, write `last` every
        `save_every` steps (0: at every evaluation)."""
        cfg = self.cfg
        if self.val_data is not None and cfg.eval_every > 0 and (
                self.step % cfg.eval_every == 0 or self.step == cfg.steps):
            val = self.evaluate(self.val_data, max_batches=cfg.eval_batches)
            row = row or {"step": self.step, "epoch": self.epoch, "tokens": self.tokens_seen}
            row.update({f"val_{k}": v for k, v in val.items() if k not in ("weight", "tokens")})
            self._maybe_save_best(val)  # every rank: the save is a collective
        if row is not None and self.rank == 0:
            self.metrics.log(row)
        every = cfg.save_every if cfg.save_every > 0 else cfg.eval_every
        if every > 0 and self.step % every == 0:
            self.save_checkpoint(self.out_dir / "checkpoints" / "last")


    def evaluate(self, data: Dataset, max_batches: int = 0, desc: str = "eval") -> dict:
        """Average loss and metrics of `loss_fn` over `data` with the current model."""
        bs = self.cfg.eval_batch_size or self.cfg.batch_size
        with context_parallel_scope(self.cp):
            return evaluate(self.model, self.loss_fn, data, bs, self.device, self.collate_fn,
                            max_batches, self.autocast, progress=self.cfg.progress, desc=desc)

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

    def restore_best(self) -> bool:
        """Load the weights of checkpoints/best into the model; False when there is none."""
        if dist.is_initialized():
            dist.barrier()  # rank 0 may still be writing it
        best = self.out_dir / "checkpoints" / "best"
        if not (best / "model.safetensors").is_file():
            return False
        if is_sharded(self.model):
            load_full_weights(self.model, best / "model.safetensors")
        else:
            load_weights(self.raw_model, best, self.device, "checkpoints/best")
        return True


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
        lr = float(self.scheduler.get_last_lr()[0])
        bf16 = self.amp_dtype is not None
        repeated = (f" for {MAX_SKIPPED_IN_A_ROW + 1} batches in a row"
                    if self.cfg.skip_nonfinite else "")
        newest = newest_checkpoint(self.out_dir)
        checkpoint = (f"the last good checkpoint is {newest[1]} (step {newest[0]})" if newest else
                      "no checkpoint was written yet (train.save_every=N writes one every N steps)")
        advice = [f"lower train.lr (now {self.cfg.lr:g}) or train.grad_clip"]
        if bf16:
            advice.append("try train.precision=fp32")
        if not self.cfg.skip_nonfinite:
            advice.append("set train.skip_nonfinite=true to skip such batches")
        then = f", then resume with --resume {self.out_dir}" if newest else " and start again"
        raise TrainingDiverged(
            f"the training {what} became {value} at step {step}{repeated} (lr {lr:.3g}, "
            f"precision {'bf16 autocast' if bf16 else 'fp32'}); {checkpoint}. "
            f"{'; '.join(advice).capitalize()}{then}")

    def _on_interrupt(self, signum: int) -> None:
        name = signal.Signals(signum).name
        last = self.out_dir / "checkpoints" / "last"
        self.save_checkpoint(last)  # every rank: the save is a collective
        if self.rank == 0:
            self.metrics.plot()
            print(f"\n{name}: saved a checkpoint at step {self.step} to {last}; continue with "
                  f"--resume {self.out_dir}", file=sys.stderr)
        raise TrainingInterrupted(name)


    def state_dict(self) -> dict:
        """Everything besides the weights that an exact resume needs.

        A collective under torchrun (every rank calls it): the RNG states of all ranks are
        gathered (a list, one per rank), and with FSDP the optimizer state in full.
        """
        sharded = is_sharded(self.model)
        optimizer = portable_state(full_optimizer_state(self.model, self.optimizer) if sharded
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
        """Write the model, the extra files and trainer_state.pt, atomically (checkpoint.py).

        Every rank calls it at the same step; rank 0 writes. With FSDP the weights are gathered
        into a full CPU replica first, so the folder is an ordinary checkpoint.
        """
        model = gathered_model(self.model) if is_sharded(self.model) else self.raw_model
        state = self.state_dict()
        if self.rank == 0:
            write_checkpoint(path, model, self.extra_files, state)

    def load_checkpoint(self, path: Path) -> None:
        """Load weights and trainer state from a checkpoint written by `save_checkpoint`."""
        state = check_checkpoint(path)  # CheckpointError naming a missing or unreadable file
        sharded = is_sharded(self.model)
        if state.get("fsdp", False) != sharded:
            raise CheckpointError(f"--resume {path}: saved with train.fsdp="
                                  f"{str(state.get('fsdp', False)).lower()}; resume with the same")
        if sharded:
            load_full_weights(self.model, path / "model.safetensors")
        else:
            load_weights(self.raw_model, path, self.device)
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
        set_capturable(self.optimizer, self.graphed is not None)  # the saved groups came back
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.epoch, self.position = state["step"], state["epoch"], state["position"]
        self.tokens_seen, self.best_value = state["tokens_seen"], state["best_value"]
        rng = state["rng"]
        set_rng_state(rng[self.rank] if isinstance(rng, list) else rng)
        self.metrics.restore(self.step)
