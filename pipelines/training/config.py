"""`TrainConfig`: the `train:` section of a run config.

Light on purpose (no torch): run configs are loaded and checked before any heavy import, so that
`mamba-bio-audio configs` and config errors answer at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mamba_bio_audio.errors import ConfigError

MAX_SKIPPED_IN_A_ROW = 10  # train.skip_nonfinite: more non-finite batches in a row stop the run
DEVICE_NAME = re.compile(r"auto|(cpu|cuda|mps|xpu)(:\d+)?")


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
    `cuda_graph`: capture the whole training step (forward, backward, clipping, AdamW) once in a
    CUDA graph and replay it (cuda_graph.py): the host launches one graph a step instead of every
    kernel, which is what limits small models; a change of window shape (a `seq_len_stages` step)
    captures again. "auto" (default): on when the run is on one CUDA GPU (not under torchrun),
    and a step that cannot be captured (or whose capture runs out of GPU memory) trains eagerly
    with a one-line note; true: on, and an error where it cannot be; false: off.
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
    cuda_graph: bool | str = "auto"
    progress: bool = True

    def validate(self) -> TrainConfig:
        """Raise ConfigError on values that cannot work (names the `train.<key>`). Whether a
        named CUDA device exists is checked when the job starts (`device.resolve_device`)."""
        for key in ("steps", "batch_size", "grad_accum", "log_every", "context_parallel"):
            if getattr(self, key) < 1:
                raise ConfigError(f"train.{key} must be >= 1, got {getattr(self, key)}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ConfigError(f"train.precision must be auto, bf16 or fp32, got {self.precision!r}")
        if not DEVICE_NAME.fullmatch(self.device):
            raise ConfigError(f"train.device={self.device!r}: expected auto, cpu, cuda or cuda:N")
        if self.best_mode not in ("min", "max"):
            raise ConfigError(f"train.best_mode must be min or max, got {self.best_mode!r}")
        if self.cuda_graph not in (True, False, "auto"):
            raise ConfigError(f"train.cuda_graph must be auto, true or false, got {self.cuda_graph!r}")
        if self.cuda_graph is True and (self.fsdp or self.context_parallel > 1):
            raise ConfigError("train.cuda_graph=true runs on one GPU; it cannot be combined with "
                              "train.fsdp or train.context_parallel")
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
        return self

    def stage_at(self, step: int) -> tuple[int | None, int]:
        """(seq_len or None, batch_size) in force at `step` (see `seq_len_stages`)."""
        seq_len, batch = None, self.batch_size
        for stage in self.seq_len_stages:
            if step >= stage[0]:
                seq_len = int(stage[1])
                batch = int(stage[2]) if len(stage) == 3 else self.batch_size
        return seq_len, batch
