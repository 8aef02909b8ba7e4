"""`mamba-bio-audio synthetic`: selective copying and induction heads, with the LTI ablation.

Setup (config, seeded task data, one model per variant), train (the shared `Trainer`, the same
step budget for every variant), evaluate (accuracy at every test length, inference through the
chunked scan carrying the recurrent state, so memory does not grow with the length), report (a
table, accuracy_by_length.png, summary.json).

    mamba-bio-audio synthetic selective-copy                   # selective vs LTI, CPU minutes
    mamba-bio-audio synthetic induction-heads                  # trained at 256, tested to 65,536
    mamba-bio-audio synthetic induction-heads model.selective=true   # one variant only
    mamba-bio-audio synthetic selective-copy --config synthetic_selective_copy_gpu

Variants: `models` in the config (default [selective, lti]); a `model.selective=true|false`
override runs only that variant. summary.json's `accuracy` maps each variant to
{test length: accuracy}: per-token accuracy for selective copying, exact match for induction heads.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mamba_bio_audio.config import MambaConfig, apply_overrides, from_dict, load_yaml
from mamba_bio_audio.data.synthetic import IGNORE, SyntheticTask
from mamba_bio_audio.errors import ConfigError

from .common.arguments import positive_int
from .common.figures import figure
from .common.outputs import check_new_run_dir, write_output, write_summary
from .common.run_config import config_path
from .common.runs import default_run_dir, save_run_config
from .training.config import TrainConfig
from .training.device import resolve_device
from .training.distributed import log
from .training.losses import answer_loss
from .training.trainer import Trainer

TASK_CONFIGS = {"selective-copy": "synthetic_selective_copy",
                "induction-heads": "synthetic_induction_heads"}
VARIANTS = {"selective": True, "lti": False}  # name -> model.selective
METRIC = {"selective-copy": "token_accuracy", "induction-heads": "exact_match"}


@dataclass
class SyntheticDataConfig:
    """The `data:` section of a synthetic run.

    seq_len: training length L. n_tokens: K, tokens to copy (selective copying only).
    train_items / val_items: examples per epoch (fresh each epoch) / in the fixed validation set.
    val_seq_len: length of the validation sequences (0: seq_len). Training stays at seq_len; a
        longer validation length only changes which checkpoint is kept as `best`.
    test_lengths: the lengths L to evaluate at; test_items: sequences per test length.
    eval_tokens: test batch size = max(1, eval_tokens // L).
    eval_chunk: test sequences go through the model in pieces of this many positions, the
        recurrent state carried from piece to piece (memory independent of L).
    """

    seq_len: int = 256
    n_tokens: int = 16
    vocab_size: int = 16
    train_items: int = 1_000_000
    val_items: int = 256
    val_seq_len: int = 0
    test_lengths: list[int] = field(default_factory=lambda: [256])
    test_items: int = 256
    eval_tokens: int = 65536
    eval_chunk: int = 8192
    seed: int = 0


@dataclass
class SyntheticConfig:
    """A synthetic run: the task, the variants to compare, and the model/data/train sections."""

    command: str = "synthetic"
    task: str = "selective-copy"
    models: list[str] = field(default_factory=lambda: ["selective", "lti"])
    state_passing: int = 0  # > 0: train from the state after n other sequences (see answer_loss)
    init: str | None = None  # an earlier synthetic run folder: start from its best weights
    model: MambaConfig = field(default_factory=lambda: MambaConfig(d_model=64, n_layer=2,
                                                                  vocab_size=16))
    data: SyntheticDataConfig = field(default_factory=SyntheticDataConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(best_metric="accuracy",
                                                                   best_mode="max"))

    def validate(self) -> "SyntheticConfig":
        if self.command != "synthetic":
            raise ConfigError(f"command={self.command!r}: this config is not for `synthetic`")
        if self.task not in TASK_CONFIGS:
            raise ConfigError(f"task={self.task!r}: expected one of {', '.join(TASK_CONFIGS)}")
        bad = [m for m in self.models if m not in VARIANTS]
        if bad or not self.models:
            raise ConfigError(f"models={self.models!r}: expected a non-empty list of "
                              f"{', '.join(VARIANTS)}")
        d = self.data
        if self.model.vocab_size != d.vocab_size:
            raise ConfigError(f"model.vocab_size={self.model.vocab_size} differs from "
                              f"data.vocab_size={d.vocab_size}")
        if d.eval_chunk < 1 or d.eval_tokens < 1 or d.test_items < 1 or not d.test_lengths:
            raise ConfigError("data.eval_chunk, data.eval_tokens, data.test_items must be >= 1 "
                              "and data.test_lengths non-empty")
        if d.val_seq_len < 0:
            raise ConfigError(f"data.val_seq_len={d.val_seq_len}: expected 0 (= data.seq_len) "
                              "or a length")
        for L in [d.seq_len, d.val_seq_len or d.seq_len, *d.test_lengths]:  # raise now, not in the middle of a run
            try:
                SyntheticTask(self.task, 1, L, d.vocab_size, d.n_tokens)
            except ValueError as err:
                raise ConfigError(f"data: {err}") from None
        self.model.validate()
        self.train.validate()
        return self


def load_synthetic_config(name_or_file: str, overrides=()) -> SyntheticConfig:
    """Load a synthetic run config (built-in name or YAML file) and apply key=value overrides.

    An override of `model.selective` keeps only that variant.
    """
    cfg = from_dict(SyntheticConfig, load_yaml(config_path(name_or_file)), where="")
    cfg = apply_overrides(cfg, list(overrides))
    if any(o.split("=", 1)[0].strip() == "model.selective" for o in overrides):
        cfg.models = ["selective" if cfg.model.selective else "lti"]
    return cfg.validate()


@torch.no_grad()
def evaluate_length(model, data: SyntheticTask, batch_size: int, chunk: int, device) -> dict:
    """Accuracy of `model` on every example of `data`, run `chunk` positions at a time.

    Returns {"token_accuracy": correct answers / answers, "exact_match": sequences with every
    answer right / sequences, "sequences": n}.
    """
    model.eval()
    correct = answers = exact = 0
    for start in range(0, len(data), batch_size):
        items = [data[i] for i in range(start, min(start + batch_size, len(data)))]
        ids = torch.stack([x["ids"] for x in items]).to(device)  # (b, l)
        targets = torch.stack([x["targets"] for x in items]).to(device)
        state = model.allocate_state(ids.shape[0], device)
        wrong = torch.zeros(ids.shape[0], dtype=torch.long, device=device)
        for s in range(0, ids.shape[1], chunk):
            t = targets[:, s:s + chunk]
            logits = model(ids[:, s:s + chunk], state)  # (b, c, V); state moves to s + c
            mask = t != IGNORE
            ok = (logits.argmax(-1) == t) & mask
            correct += int(ok.sum())
            answers += int(mask.sum())
            wrong += (mask & ~ok).sum(1)
        exact += int((wrong == 0).sum())
    return {"token_accuracy": correct / answers, "exact_match": exact / len(data),
            "sequences": len(data)}


def train_variant(cfg: SyntheticConfig, name: str, run_dir: Path, device) -> dict:
    """Train one variant and evaluate it at every test length; returns its results."""
    from mamba_bio_audio.models import MambaLM

    d = cfg.data
    model_cfg = dataclasses.replace(cfg.model, selective=VARIANTS[name])
    torch.manual_seed(cfg.train.seed)  # both variants start from the same draws
    if cfg.init:  # continue from an earlier run's best weights (e.g. post-training)
        path = Path(cfg.init) / name / "checkpoints" / "best"
        if not path.is_dir():
            raise ConfigError(f"init={cfg.init}: no checkpoint {path} for the {name} model "
                              "(init takes the run folder of an earlier synthetic run)")
        model = MambaLM.from_pretrained(path, device=device)
        if model.config.selective != model_cfg.selective or model.config.d_model != cfg.model.d_model:
            raise ConfigError(f"init={cfg.init}: {path} holds a different model "
                              f"(selective={model.config.selective}, d_model={model.config.d_model})")
    else:
        model = MambaLM(model_cfg).to(device)
    n_params = model.num_parameters()
    log(f"[{name}] {n_params:,} parameters, training at L={d.seq_len} for {cfg.train.steps} steps")
    train = SyntheticTask(cfg.task, d.train_items, d.seq_len, d.vocab_size, d.n_tokens, d.seed)
    val = SyntheticTask(cfg.task, d.val_items, d.val_seq_len or d.seq_len, d.vocab_size,
                        d.n_tokens, d.seed + 1)
    loss = functools.partial(answer_loss, state_passing=cfg.state_passing)
    trainer = Trainer(model, loss, train, val, cfg.train, run_dir / name)
    fit = trainer.fit()
    trainer.restore_best()
    t0 = time.perf_counter()
    by_length = {}
    for L in d.test_lengths:
        test = SyntheticTask(cfg.task, d.test_items, L, d.vocab_size, d.n_tokens, d.seed + 2)
        res = evaluate_length(model, test, max(1, d.eval_tokens // test.length), d.eval_chunk,
                              device)
        by_length[L] = res
        log(f"[{name}] L={L:>9,}: token accuracy {res['token_accuracy']:.4f}, "
            f"exact match {res['exact_match']:.4f}")
    return {"selective": model_cfg.selective, "parameters": n_params, "steps": fit.step,
            "train_wall_seconds": fit.wall_seconds, "eval_wall_seconds": time.perf_counter() - t0,
            f"best_val_{cfg.train.best_metric}": fit.best_value, "by_length": by_length}


def run_variants(cfg: SyntheticConfig, run_dir: Path, device, jobs: int = 1) -> dict:
    """{variant: results} of `train_variant` for every variant, `jobs` of them at once.

    With jobs > 1 (CPU only) each variant trains in its own process with one thread each, so
    that two variants on a two-core machine take about the time of one.
    """
    if jobs <= 1 or len(cfg.models) == 1 or device.type != "cpu":
        return {m: train_variant(cfg, m, run_dir, device) for m in cfg.models}
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(jobs, len(cfg.models)), mp_context=ctx,
                             initializer=torch.set_num_threads, initargs=(1,)) as pool:
        futures = {m: pool.submit(train_variant, cfg, m, run_dir, device) for m in cfg.models}
        return {m: f.result() for m, f in futures.items()}


def table(cfg: SyntheticConfig, results: dict) -> str:
    """A Markdown table: one row per variant, one column per test length (accuracy in %)."""
    lengths = cfg.data.test_lengths
    metric = METRIC[cfg.task]
    head = ["model", "params", "steps", "train s"] + [f"L={L:,}" for L in lengths]
    rows = [head, ["---"] * len(head)]
    for name, r in results.items():
        rows.append([name, f"{r['parameters']:,}", str(r["steps"]),
                     f"{r['train_wall_seconds']:.0f}"] +
                    [f"{100 * r['by_length'][L][metric]:.1f}" for L in lengths])
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def plot(cfg: SyntheticConfig, results: dict, path: Path) -> None:
    """accuracy (%) against test length (log scale), one line per variant."""
    metric = METRIC[cfg.task]
    with figure(path, figsize=(6, 4)) as (fig, ax):
        for name, r in results.items():
            ax.plot(cfg.data.test_lengths,
                    [100 * r["by_length"][L][metric] for L in cfg.data.test_lengths],
                    marker="o", label=name)
        ax.axvline(cfg.data.seq_len, color="grey", ls="--", lw=1, label="training length")
        ax.set_xscale("log", base=2)
        ax.set(xlabel="test sequence length L", ylabel=f"{metric.replace('_', ' ')} (%)",
               ylim=(-2, 102), title=cfg.task)
        ax.grid(alpha=0.3)
        ax.legend()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task", choices=list(TASK_CONFIGS), help="which synthetic task")
    parser.add_argument("--config", default=None,
                        help="built-in config name or YAML file (default: synthetic_<task>)")
    parser.add_argument("--out", default=None, help="run folder (default: runs/synthetic-<time>)")
    parser.add_argument("--jobs", type=positive_int, default=1,
                        help="train this many variants at once, one process each (CPU) (default: %(default)s)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="override config fields, e.g. model.selective=false train.steps=500 "
                             "'data.test_lengths=[256,4096]'")


def main(args) -> int:
    t0 = time.perf_counter()
    name = args.config or TASK_CONFIGS[args.task].replace("-", "_")
    cfg = load_synthetic_config(name, args.overrides)
    if cfg.task != args.task:
        raise ConfigError(f"--config {name} is for task {cfg.task}, not {args.task}")
    run_dir = Path(args.out) if args.out else default_run_dir("synthetic")
    if args.out:
        check_new_run_dir(run_dir)
    device = resolve_device(cfg.train.device)
    run_dir = save_run_config(cfg, run_dir, args)
    results = run_variants(cfg, run_dir, device, args.jobs)

    metric = METRIC[cfg.task]
    text = (f"{cfg.task}: {metric.replace('_', ' ')} (%) by test length; trained at "
            f"L={cfg.data.seq_len}, {cfg.model.n_layer} layers, d_model {cfg.model.d_model}, "
            f"{cfg.data.test_items} test sequences per length\n\n{table(cfg, results)}\n")
    write_output(run_dir / "results.md", text)
    plot(cfg, results, run_dir / "accuracy_by_length.png")
    summary = {
        "command": "synthetic", "task": cfg.task, "metric": metric,
        "accuracy": {m: {str(L): r["by_length"][L][metric] for L in cfg.data.test_lengths}
                     for m, r in results.items()},
        "models": {m: {k: v for k, v in r.items() if k != "by_length"} for m, r in results.items()},
        "by_length": {m: {str(L): v for L, v in r["by_length"].items()}
                      for m, r in results.items()},
        "wall_seconds": time.perf_counter() - t0,
    }
    write_summary(run_dir, summary)
    print(text + f"\nplot: {run_dir}/accuracy_by_length.png   summary: {run_dir}/summary.json")
    return 0

