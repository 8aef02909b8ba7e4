"""Run configs: the `model`, `data` and `train` sections of a job, loaded from YAML + overrides.

A run config is a YAML file in `pipelines/configs/` (or any path) mapped onto `RunConfig`:

    # mamba-bio-audio pretrain --config pretrain_dna
    command: pretrain
    model: {d_model: 64, n_layer: 4}          # MambaConfig fields
    data: {kind: genome, seq_len: 1024}       # DataConfig fields
    train: {steps: 300, lr: 3.0e-3}           # TrainConfig fields

On the command line, `--config NAME|FILE` picks the file and `key=value` arguments override single
fields (`model.d_model=128 train.lr=1e-3`); values are type-checked and unknown keys are rejected
with the list of valid ones (by the generic helpers of `mamba_bio_audio.config`).

This module also holds what every training command shares: the common arguments, the run folder
(`runs/<command>-<time>` with `config.yaml` and `summary.json`) and `--resume`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mamba_bio_audio.config import MambaConfig, apply_overrides, from_dict, load_yaml, to_dict
from mamba_bio_audio.errors import ConfigError, RunComplete

from .checkpoint import load_trainer_state
from .trainer import TrainConfig, find_checkpoint, seed_everything

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

DEFAULT_CONFIGS = {
    "pretrain": "pretrain_dna",
    "classify": "classify_species",
    "finetune": "finetune_audio",
}

RUN_COMMANDS = ("pretrain", "classify", "finetune")  # the commands whose configs are RunConfigs
DATA_KINDS = ("genome", "audio", "species", "labeled", "splice", "digits", "recordings")
DNA_CLASSIFICATION = ("species", "labeled", "splice")  # kinds with a reverse complement
FEATURES = ("waveform", "mel")  # data.features: what a digits classifier reads of each clip


@dataclass
class DataConfig:
    """The `data:` section. `path: null` means the bundled sample of that kind.

    kind: genome (a FASTA; LM), audio / recordings (long WAV/FLAC files; LM), species (one FASTA
        per class; classifier), labeled (CSV with sequence,label columns) or splice (UCI splice
        junctions), digits (spoken digits, FSDD layout `{digit}_{speaker}_{index}.wav|flac`).
    seq_len: window length in tokens (bases or audio samples).
    splits: genome: chromosome names per split {train: [...], val: [...], test: [...]};
        empty = the bundled yeast splits or, for another FASTA, the end of every record
        (val_fraction, test_fraction) held out.
    bed: genome: a BED file of intervals to sample (with a 4th column train/val/test, as
        HyenaDNA's sequences.bed); overrides `splits`.
    train_items / val_items / test_items: windows drawn per epoch (for window datasets).
    sample_rate: audio is resampled to this rate. mu_law_levels: audio vocabulary size.
    features: digits: what the model reads of each clip: "waveform" (mu-law sample ids, seq_len
        samples) or "mel" (log-mel frames of n_mels bands, 25 ms windows every 10 ms, normalised
        per clip; seq_len counts frames, 100 = 1 s; the model gets model.input_dim = n_mels).
    rc_augment: DNA classification: random reverse complement of training windows.
    rc_test: DNA classification: score every test window (and every window `predict` reads) as
        the mean of its and its reverse complement's class probabilities.
    val_fraction / test_fraction: data without official splits is split this way (labeled items,
        species genomes and recordings: the end of each record / recording is held out).
    split_by: recordings: "time" (each recording cut into train | val | test), "file" (whole
        files) or "auto" (file for kind=audio, time for kind=recordings).
    """

    kind: str = "genome"
    path: str | None = None
    seq_len: int = 1024
    splits: dict = field(default_factory=dict)
    bed: str | None = None
    train_items: int = 4096
    val_items: int = 512
    test_items: int = 1024
    sample_rate: int = 8000
    mu_law_levels: int = 256
    features: str = "waveform"
    n_mels: int = 40
    rc_augment: bool = False
    rc_test: bool = False
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    split_by: str = "auto"
    seed: int = 0

    def validate(self) -> DataConfig:
        if self.kind not in DATA_KINDS:
            raise ConfigError(f"data.kind={self.kind!r}: expected one of {', '.join(DATA_KINDS)}")
        for key in ("seq_len", "train_items", "val_items", "test_items", "sample_rate"):
            if getattr(self, key) < 1:
                raise ConfigError(f"data.{key}={getattr(self, key)}: expected a positive integer")
        if self.features not in FEATURES:
            raise ConfigError(f"data.features={self.features!r}: expected one of "
                              f"{', '.join(FEATURES)}")
        if self.features == "mel" and self.kind != "digits":
            raise ConfigError(f"data.features=mel is for audio clip classification "
                              f"(data.kind=digits), not data.kind={self.kind}")
        if self.n_mels < 1:
            raise ConfigError(f"data.n_mels={self.n_mels}: expected a positive integer")
        for key in ("rc_augment", "rc_test"):
            if getattr(self, key) and self.kind not in DNA_CLASSIFICATION:
                raise ConfigError(f"data.{key}=true is for DNA classification (data.kind="
                                  f"{' | '.join(DNA_CLASSIFICATION)}), not data.kind={self.kind}")
        if self.split_by not in ("auto", "time", "file"):
            raise ConfigError(f"data.split_by={self.split_by!r}: expected auto, time or file")
        if not 0 < self.val_fraction < 1 or not 0 < self.test_fraction < 1:
            raise ConfigError("data.val_fraction and data.test_fraction must lie in (0, 1)")
        return self


@dataclass
class RunConfig:
    """A whole run: which command it is for, and its model, data and train sections.

    init: classify / finetune: a pretrained checkpoint folder to start from (null: from scratch).
    markov_max_order: pretrain: the largest order k of the Markov baselines.
    baseline: classify: also fit and report the simple baseline.
    """

    command: str = "pretrain"
    model: MambaConfig = field(default_factory=MambaConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    init: str | None = None
    markov_max_order: int = 8
    baseline: bool = True

    def validate(self) -> RunConfig:
        self.model.validate()
        self.data.validate()
        self.train.validate()
        if self.model.rc_equivariant and self.data.kind not in ("genome", *DNA_CLASSIFICATION):
            raise ConfigError(f"model.rc_equivariant=true is for DNA (data.kind=genome | "
                              f"{' | '.join(DNA_CLASSIFICATION)}), not data.kind={self.data.kind}")
        return self


def builtin_configs() -> dict[str, Path]:
    """{name: path} of the YAML files shipped in pipelines/configs/."""
    return {p.stem: p for p in sorted(CONFIG_DIR.glob("*.yaml"))}


def config_path(name_or_file: str) -> Path:
    """Resolve `--config`: a built-in name (with or without .yaml) or a path to a YAML file."""
    path = Path(name_or_file)
    if path.is_file():
        return path
    builtin = builtin_configs()
    if path.stem in builtin and (path.suffix in ("", ".yaml") and len(path.parts) == 1):
        return builtin[path.stem]
    raise ConfigError(f"--config {name_or_file}: no such file nor built-in config; built-in "
                      f"ones are {', '.join(builtin)} (see `mamba-bio-audio configs`)")


def first_comment(path: Path) -> str:
    """The command line given in a config's first comment line ('' if none)."""
    for line in Path(path).read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
        if line.strip():
            break
    return ""


def load_run_config(name_or_file: str, overrides: list[str] = (), command: str | None = None
                    ) -> RunConfig:
    """Load a YAML run config, apply `key=value` overrides, check it is meant for `command`."""
    path = config_path(name_or_file)
    cfg = from_dict(RunConfig, load_yaml(path), where="")
    kind, stages = cfg.data.kind, list(cfg.train.seq_len_stages)
    cfg = apply_overrides(cfg, list(overrides))
    if cfg.data.kind != kind and cfg.train.seq_len_stages == stages:
        cfg.train.seq_len_stages = []  # the config's warm-up was for its own kind of data
    if command is not None and cfg.command != command:
        raise ConfigError(f"--config {name_or_file}: this config is for `{cfg.command}`, not "
                          f"`{command}`; pick one of "
                          f"{', '.join(n for n, p in builtin_configs().items() if _command_of(p) == command)}")
    return cfg.validate()


def _command_of(path: Path) -> str:
    try:
        return str(load_yaml(path).get("command", ""))
    except ConfigError:
        return ""


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
    run is the same run; overrides still apply on top. Seeds the RNGs with `train.seed`, so that
    the model built next has the same initial weights in every run and on every rank.
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
    seed_everything(cfg.train.seed)  # the model's initial weights: the same on every rank and run
    return cfg, run_dir, resume_ckpt


def check_new_run_dir(run_dir: Path, command: str = "") -> None:
    """Refuse `--out DIR` when DIR already holds a run (its results would be overwritten)."""
    if run_dir.is_file():
        raise ConfigError(f"--out {run_dir}: is a file; expected a run folder to create")
    held = [name for name in ("config.yaml", "summary.json", "checkpoints")
            if (run_dir / name).exists()]
    if held:
        hint = ("" if command == "generate" else f"continue it with --resume {run_dir}, or ")
        raise ConfigError(f"--out {run_dir}: already holds a run ({', '.join(held)}); "
                          f"{hint}give a new folder")


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


def save_run_config(cfg: RunConfig, run_dir: Path, args: argparse.Namespace | None = None) -> Path:
    """Write the resolved config as run_dir/config.yaml (atomically); returns the run folder.

    When `args` has neither --out nor --resume, run_dir is only a proposed default name: a free
    folder is claimed now (not earlier, so that a command that fails on its inputs leaves none).
    """
    if args is not None and not args.out and not args.resume:
        run_dir = default_run_dir(run_dir.name.split("-")[0], create=True)
        CREATED_DIRS.append(run_dir)
    else:
        make_output_dir(run_dir)
    text = f"# resolved config of this run\n{yaml.safe_dump(to_dict(cfg), sort_keys=False)}"
    write_atomic(run_dir / "config.yaml", text)
    return run_dir


CREATED_DIRS: list[Path] = []  # output folders this process created (removed if it fails early)


def make_output_dir(path: Path) -> Path:
    """mkdir -p `path`, remembering the folders this creates (see `remove_unfinished_outputs`)."""
    path = Path(path)
    missing = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    CREATED_DIRS.extend(reversed(missing))
    return path


def remove_unfinished_outputs() -> None:
    """After a failed command: delete the folders it created that hold no checkpoint, so that a
    failure leaves nothing behind; a run with a checkpoint is kept (it can be resumed)."""
    import shutil

    for path in reversed(CREATED_DIRS):
        if path.is_dir() and not any(path.glob("**/checkpoints/*/config.json")):
            shutil.rmtree(path, ignore_errors=True)
    CREATED_DIRS.clear()


def write_summary(run_dir: Path, summary: dict) -> Path:
    """Write run_dir/summary.json (atomically) and return its path."""
    path = Path(run_dir) / "summary.json"
    write_atomic(path, json.dumps(summary, indent=2, default=_jsonable) + "\n")
    return path


def _jsonable(obj):
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_atomic(path: Path, content) -> Path:
    """Write a file whole or not at all: into a temp file beside `path`, then rename it.

    content: str, bytes, or a function that writes the file at the path it is given (e.g.
    matplotlib's savefig). A failure removes the temp file and names `path`, not the temp file.
    """
    path = Path(path)
    if not path.parent.exists():
        make_output_dir(path.parent)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix}")
    try:
        if isinstance(content, str):
            tmp.write_text(content)
        elif isinstance(content, bytes):
            tmp.write_bytes(content)
        else:
            content(tmp)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OSError(err.errno, err.strerror, str(path)) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def check_writable(path: Path, option: str) -> None:
    """Before any compute: raise ConfigError unless a file can be written at `path` (its folder
    may not exist yet; nothing is created here)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{option} {path}: is a folder; expected a file name")
    folder = next((p for p in path.parents if p.exists()), Path("."))
    if not folder.is_dir():
        raise ConfigError(f"{option} {path}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {path}: cannot write into {folder} (permission denied)")
