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

Light on purpose (no torch): `mamba-bio-audio configs` and config errors answer at once. The run
folder and `--resume` are in runs.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mamba_bio_audio.config import MambaConfig, apply_overrides, from_dict, load_yaml
from mamba_bio_audio.errors import ConfigError

from ..training.config import TrainConfig

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"

DEFAULT_CONFIGS = {
    "pretrain": "pretrain_dna",
    "classify": "classify_species",
    "finetune": "finetune_audio",
}

RUN_COMMANDS = ("pretrain", "classify", "finetune")  # the commands whose configs are RunConfigs
DATA_KINDS = ("genome", "audio", "species", "labeled", "splice", "digits", "recordings")
DNA_CLASSIFICATION = ("species", "labeled", "splice")  # kinds with a reverse complement
AUDIO_KINDS = ("audio", "recordings", "digits")  # kinds read through the audio front-end
DEFAULT_SAMPLE_RATE = 8000  # Hz: data.sample_rate, and the rate of checkpoints that name none
FEATURES = ("waveform", "mel")  # data.features: what a digits classifier reads of each clip


@dataclass
class DataConfig:
    """The `data:` section. `path: null` means the bundled sample of that kind.

    kind: genome (a FASTA; LM), audio / recordings (long WAV/FLAC files; LM), species (one FASTA
        per class; classifier), labeled (CSV with sequence,label columns) or splice (UCI splice
        junctions), digits (spoken digits, FSDD layout `{digit}_{speaker}_{index}.wav|flac`;
        classifier, or LM of whole clips padded with silence to seq_len).
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
    sample_rate: int = DEFAULT_SAMPLE_RATE
    mu_law_levels: int = 256
    features: str = "waveform"
    n_mels: int = 40
    rc_augment: bool = False
    rc_test: bool = False
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    split_by: str = "auto"
    seed: int = 0

    @property
    def fractions(self) -> tuple[float, float, float]:
        """(train, val, test) fractions for data without official splits."""
        return (1 - self.val_fraction - self.test_fraction, self.val_fraction, self.test_fraction)

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
