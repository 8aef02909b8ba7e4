"""What every training command shares: its arguments, the run folder and `--resume`.

A run folder (`runs/<command>-<date>-<time>`, or `--out DIR`) holds the resolved `config.yaml`,
`metrics.csv`, `loss_curve.png`, `checkpoints/{last,best}` and `summary.json`.
"""

from __future__ import annotations

import argparse
import datetime
import os
from pathlib import Path

import yaml

from mamba_bio_audio.config import to_dict
from mamba_bio_audio.errors import ConfigError, RunComplete

from ..training.checkpoint import find_checkpoint, load_trainer_state
from .outputs import CREATED_DIRS, check_new_run_dir, make_output_dir, write_output
from .run_config import DEFAULT_CONFIGS, RunConfig, load_run_config


def add_run_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    """Arguments every training command takes: --config, --out, --resume, key=value overrides."""
    default = DEFAULT_CONFIGS.get(command, command)
    parser.add_argument("--config", default=None,
                        help=f"built-in config name or YAML file (default: {default}; "
                             "list them with `mamba-bio-audio configs`)")
    parser.add_argument("--out", default=None,
                        help=f"run folder (default: runs/{command}-<date>-<time>)")
    parser.add_argument("--resume", default=None, metavar="DIR",
                        help="continue an interrupted run (its folder or a checkpoints/last folder)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="override config fields, e.g. model.d_model=128 train.steps=500")
    parser.set_defaults(default_config=default)


def resolve_run(args: argparse.Namespace, command: str) -> tuple[RunConfig, Path, Path | None]:
    """(config, run folder, checkpoint to resume or None) from the parsed common arguments.

    With --resume and no --config, the run's own saved config.yaml is used, so that the resumed
    run is the same run; overrides still apply on top. Torch is imported only once the config
    is valid (config errors answer at once); then a CUDA device that is not there is refused and
    the RNGs are seeded with `train.seed`, so that the model built next has the same initial
    weights in every run and on every rank.
    """
    resume_ckpt = None
    if args.resume:
        resume_ckpt = find_checkpoint(args.resume)
        run_dir = Path(args.out) if args.out else _run_dir_of(resume_ckpt)
        saved = run_dir / "config.yaml"
        source = args.config or (str(saved) if saved.is_file() else args.default_config)
    else:
        run_dir = Path(args.out) if args.out else default_run_dir(command)
        source = args.config or args.default_config
        if args.out and int(os.environ.get("RANK", "0")) == 0:  # under torchrun, rank 0 only: the
            check_new_run_dir(run_dir)  # others may look after it has written config.yaml
    cfg = load_run_config(source, args.overrides, command)
    if resume_ckpt is not None:
        step = load_trainer_state(resume_ckpt).get("step", 0)
        if step >= cfg.train.steps and (run_dir / "summary.json").is_file():
            raise RunComplete(f"{run_dir}: this run is complete (step {step} of "
                              f"train.steps={cfg.train.steps}); its results are in "
                              f"{run_dir / 'summary.json'}. To train on, resume with a larger "
                              "train.steps=N")
    from ..training.device import resolve_device
    from ..training.rng import seed_everything

    resolve_device(cfg.train.device)
    seed_everything(cfg.train.seed)  # the model's initial weights: the same on every rank and run
    return cfg, run_dir, resume_ckpt


def _run_dir_of(checkpoint: Path) -> Path:
    """checkpoints/last -> the run folder."""
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint


def default_run_dir(command: str, create: bool = False) -> Path:
    """runs/<command>-<date>-<time>, or with -2, -3, ... when that folder exists.

    With `create`, the folder is claimed with mkdir, so that two commands started in the same
    second never share one. Under torchrun every local rank gets the same folder, named after the
    launcher's process id.
    """
    root = Path("runs")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return root / f"{command}-torchrun-{os.getppid()}"
    base = f"{command}-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    for i in range(1, 1000):
        path = root / (base if i == 1 else f"{base}-{i}")
        if not create and not path.exists():
            return path
        if create:
            try:
                path.mkdir(parents=True)
                return path
            except FileExistsError:
                continue
    raise ConfigError(f"{root}: could not find a free run folder name {base}-N; give --out")


def save_run_config(cfg, run_dir: Path, args: argparse.Namespace | None = None) -> Path:
    """Write the resolved config as run_dir/config.yaml (atomically); returns the run folder.

    When `args` has neither --out nor --resume, run_dir is only a proposed default name: a free
    folder is claimed now (not earlier, so that a command that fails on its inputs leaves none).
    """
    if args is not None and not args.out and not getattr(args, "resume", None):
        run_dir = default_run_dir(run_dir.name.split("-")[0], create=True)
        CREATED_DIRS.append(run_dir)
    else:
        make_output_dir(run_dir)
    text = f"# resolved config of this run\n{yaml.safe_dump(to_dict(cfg), sort_keys=False)}"
    write_output(run_dir / "config.yaml", text)
    return run_dir
