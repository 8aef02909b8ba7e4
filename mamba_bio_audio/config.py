"""Model config, presets, and the generic helpers for nested dataclass configs.

`MambaConfig` describes every model of the package (isotropic or U-Net backbone, LM or classifier
head). The helpers below (`from_dict`, `to_dict`, `apply_overrides`, `load_yaml`) work for any
dataclass, so the pipelines build their own nested configs (``model``, ``train``, ``data``) on them:

    cfg = from_dict(RunConfig, load_yaml("pretrain_dna.yaml"))   # pipelines/common/run_config.py
    cfg = apply_overrides(cfg, ["model.d_model=128", "train.lr=1e-3"])

Every error is a `ConfigError` naming the dotted key, the value and what was expected.
"""

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import yaml

from .errors import ConfigError
from .files import write_atomic

BACKBONES = ("isotropic", "unet")
POOLINGS = ("mean", "last", "max")


@dataclass
class MambaConfig:
    """Hyper-parameters of a Mamba model (backbone + head).

    Isotropic backbone: embedding, ``n_layer`` blocks of (add, RMSNorm, Mamba mixer), final norm.
    U-Net backbone (SaShiMi layout): ``n_layer`` blocks per stage; one down stage per entry of
    ``unet_pool`` (blocks, then pool by p and widen by ``unet_expand``), a centre stage, and the
    mirrored up stages with skip connections. Width at depth i is d_model * unet_expand**i.

    Inputs: ``input_dim=0`` (default) reads token ids through an embedding of ``vocab_size``
    rows; ``input_dim=k > 0`` reads a float vector of k features per position (e.g. a log-mel
    frame), projected to d_model by a Linear layer (classifiers only; ``vocab_size`` is unused).

    Only `MambaClassifier` reads ``n_classes``, ``pooling`` and ``class_names``.

    ``rc_equivariant=True`` (isotropic, token ids): every block runs on the sequence and on its
    reverse complement with the same weights (Caduceus "PS"), so the backbone's output for RC(x)
    is the channel-flipped, position-reversed output for x; ``complement`` is the map of token ids
    to their complements' ids (the DNA pipelines take it from the tokenizer).
    """

    d_model: int = 128
    n_layer: int = 4
    vocab_size: int = 12  # the DNA character tokenizer; 256 for mu-law audio
    input_dim: int = 0  # 0: token ids (embedding); k > 0: k float features per position (Linear)
    backbone: str = "isotropic"
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: Union[int, str] = "auto"  # "auto" = ceil(d_model / 16)
    dt_min: float = 1e-3
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    dt_scale: float = 1.0
    conv_bias: bool = True
    bias: bool = False
    selective: bool = True  # False: the LTI ablation (Δ, B, C do not depend on the input)
    bidirectional: bool = False  # a forward and a reversed scan, for classification backbones
    mlp_expand: int = 0  # 0: no MLP blocks; k: a gated MLP block of width k*d after each mixer
    pad_vocab_size_multiple: int = 8
    tie_embeddings: bool = True
    residual_in_fp32: bool = True
    norm_eps: float = 1e-5
    initializer_range: float = 0.02
    gradient_checkpointing: bool = False
    unet_pool: list[int] = field(default_factory=lambda: [4, 4])
    unet_expand: int = 2
    n_classes: int = 0
    pooling: str = "mean"
    class_names: Optional[list[str]] = None
    rc_equivariant: bool = False  # reverse-complement parameter sharing (DNA; see backbone.py)
    complement: Optional[list[int]] = None  # token id -> its complement's id (rc_equivariant)

    def __post_init__(self):
        self.validate()

    def dt_rank_for(self, width: int) -> int:
        """The rank of the Δ projection of a mixer of ``width`` channels (``dt_rank``, with
        "auto" resolved as ceil(width / 16)); the U-Net's inner stages are wider than d_model."""
        return math.ceil(width / 16) if self.dt_rank == "auto" else int(self.dt_rank)

    @property
    def padded_vocab_size(self) -> int:
        """``vocab_size`` rounded up to a multiple of ``pad_vocab_size_multiple``."""
        m = self.pad_vocab_size_multiple
        return (self.vocab_size + m - 1) // m * m

    @property
    def pool_product(self) -> int:
        """Total down-sampling of the U-Net (1 for the isotropic backbone)."""
        return math.prod(self.unet_pool) if self.backbone == "unet" else 1

    @property
    def n_blocks(self) -> int:
        """Number of mixer blocks in the whole backbone."""
        if self.backbone == "unet":
            return self.n_layer * (2 * len(self.unet_pool) + 1)
        return self.n_layer

    def validate(self) -> "MambaConfig":
        """Raise ConfigError for values that cannot make a model. Returns self."""

        def need(ok, key, expected):
            if not ok:
                raise ConfigError(f"model.{key}={getattr(self, key)!r}: expected {expected}")

        for key in ("d_model", "n_layer", "vocab_size", "d_state", "d_conv", "expand",
                    "pad_vocab_size_multiple", "unet_expand"):
            need(isinstance(getattr(self, key), int) and getattr(self, key) >= 1, key,
                 "a positive integer")
        need(self.backbone in BACKBONES, "backbone", f"one of {', '.join(BACKBONES)}")
        need(self.dt_rank == "auto" or (isinstance(self.dt_rank, int) and self.dt_rank >= 1),
             "dt_rank", '"auto" or a positive integer')
        need(0 < self.dt_min <= self.dt_max, "dt_min", f"0 < dt_min <= dt_max ({self.dt_max})")
        need(self.dt_init_floor > 0, "dt_init_floor", "a positive number")
        need(self.norm_eps > 0, "norm_eps", "a positive number")
        need(isinstance(self.input_dim, int) and self.input_dim >= 0, "input_dim",
             "0 (token ids) or a positive number of features per position")
        need(self.mlp_expand >= 0, "mlp_expand", "0 (no MLP) or a positive integer")
        need(self.n_classes >= 0, "n_classes", "0 (no classifier) or a positive integer")
        need(self.pooling in POOLINGS, "pooling", f"one of {', '.join(POOLINGS)}")
        if self.class_names is not None:
            need(len(self.class_names) == self.n_classes, "class_names",
                 f"n_classes={self.n_classes} names")
        if self.rc_equivariant:
            self._validate_rc()
        if self.backbone == "unet":
            need(len(self.unet_pool) >= 1 and all(isinstance(p, int) and p >= 2
                                                  for p in self.unet_pool),
                 "unet_pool", "a non-empty list of integers >= 2")
            need(self.d_model % 2 == 0, "d_model", "an even width for the U-Net backbone")
            if self.bidirectional:
                raise ConfigError("model.bidirectional=True: the U-Net backbone is causal only; "
                                  "use backbone=isotropic for a bidirectional model")
        return self

    def _validate_rc(self) -> None:
        if self.backbone != "isotropic" or self.input_dim > 0:
            raise ConfigError("model.rc_equivariant=true is built for the isotropic backbone on "
                              "token ids (backbone=isotropic, input_dim=0)")
        if self.n_classes > 0 and self.pooling == "last":
            raise ConfigError("model.pooling='last' is not reverse-complement invariant (the last "
                              "base of RC(x) is the first of x); use mean or max with "
                              "model.rc_equivariant=true")
        c = self.complement
        if c is not None and (sorted(c) != list(range(self.vocab_size))
                              or any(c[c[i]] != i for i in range(len(c)))):
            raise ConfigError(f"model.complement={c!r}: expected a map of the {self.vocab_size} "
                              "token ids onto themselves that is its own inverse (A<->T, C<->G)")

    def to_dict(self) -> dict:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping, where: str = "model") -> "MambaConfig":
        return from_dict(cls, data, where)

    def save_json(self, path) -> None:
        """Write the config as JSON (atomically: temp file + rename)."""
        write_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load_json(cls, path) -> "MambaConfig":
        path = Path(path)
        try:
            data = json.loads(_read_text(path))
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}: not valid JSON ({err})") from None
        return cls.from_dict(data, where=str(path))

    @classmethod
    def preset(cls, name: str, **overrides) -> "MambaConfig":
        """A named preset (see `PRESETS`), with keyword overrides."""
        if name not in PRESETS:
            raise ConfigError(f"preset {name!r} is unknown; choose from {', '.join(PRESETS)}")
        return from_dict(cls, {**PRESETS[name], **overrides}, where=f"preset {name}")


PRESETS: dict[str, dict] = {
    # The paper's small HG38 models (~1.4M parameters): d_model=128, 12 layers, DNA vocabulary.
    "dna-small": dict(d_model=128, n_layer=12, vocab_size=12),
    # SC09-sized U-Net on 8-bit mu-law audio (~6M parameters), SaShiMi layout.
    "audio-unet": dict(backbone="unet", d_model=64, n_layer=4, vocab_size=256,
                       unet_pool=[4, 4], unet_expand=2, mlp_expand=2),
    # Tiny models that train in minutes on a laptop CPU (tests, bundled examples).
    "dna-tiny": dict(d_model=32, n_layer=2, vocab_size=12, d_state=8),
    "audio-tiny": dict(backbone="unet", d_model=16, n_layer=1, vocab_size=256, d_state=8,
                       unet_pool=[4, 4]),
}


def _type_name(tp) -> str:
    if tp is type(None):
        return "null"
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _check_value(value, tp, key: str):
    """Return `value` checked against the type hint `tp` (ints become floats for float fields)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _check_value(value, option, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}={value!r}: expected {_type_name(tp)}")
    if tp is type(None):
        if value is None:
            return None
    elif dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where=key)
    elif origin in (list, Sequence) or tp is list:
        if isinstance(value, (list, tuple)):
            (item_tp,) = typing.get_args(tp) or (Any,)
            return [_check_value(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    elif origin is dict or tp is dict:
        if isinstance(value, Mapping):
            _, val_tp = typing.get_args(tp) or (str, Any)
            return {str(k): _check_value(v, val_tp, f"{key}.{k}") for k, v in value.items()}
    elif tp is Any:
        return value
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None and math.isfinite(number):
            return number
        if number is not None:
            raise ConfigError(f"{key}={value!r}: expected a finite number")
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{key}={value!r}: expected {_type_name(tp)}")


def from_dict(cls, data: Mapping, where: str = "config"):
    """Build dataclass `cls` from a mapping, type-checking every value.

    Args:
        cls: a dataclass type; fields that are dataclasses are built recursively.
        data: mapping of field name -> value. Missing fields take their defaults.
        where: dotted prefix used in error messages (e.g. "model" or a file name; "" for none).
    Returns:
        an instance of `cls`.
    Raises:
        ConfigError: unknown key (listing the valid ones), or a value of the wrong type.
    """
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or 'config'}={data!r}: expected a mapping of "
                          f"{cls.__name__} fields")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = [k for k in data if k not in names]
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ConfigError(f"{key}: unknown key; valid keys are {', '.join(names)}")
    kwargs = {k: _check_value(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def to_dict(obj) -> dict:
    """A dataclass (nested ones included) as plain JSON/YAML-ready dicts and lists."""
    return json.loads(json.dumps(dataclasses.asdict(obj)))


def apply_overrides(obj, overrides: Sequence[str]):
    """Return a copy of dataclass `obj` with dotted ``key=value`` overrides applied.

    Values are parsed with `yaml.safe_load` ("128" -> 128, "[4, 4]" -> list, "null" -> None) and
    then type-checked like `from_dict`.

    Args:
        obj: a dataclass instance (e.g. a pipeline config with a ``model`` field).
        overrides: strings like "model.d_model=128" or "train.lr=1e-3".
    Returns:
        a new instance of the same type.
    """
    data = to_dict(obj)
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. model.d_model=128")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({err})") from None
        node, parts = data, key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part) if isinstance(node, dict) else None
            if not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                raise ConfigError(f"override {item!r}: {where} is not a section; "
                                  f"sections here are {', '.join(_sections(node)) or 'none'}")
            node = child
        if parts[-1] not in node:
            raise ConfigError(f"override {item!r}: unknown key {key}; valid keys here are "
                              f"{', '.join(node)}")
        node[parts[-1]] = value
    return from_dict(type(obj), data, where="")


def _sections(node) -> list:
    return [k for k, v in node.items() if isinstance(v, dict)] if isinstance(node, dict) else []


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None


def load_yaml(path_or_mapping) -> dict:
    """Read a YAML config file into a dict (a mapping is returned as a plain dict).

    Raises:
        ConfigError: the file is missing, is not valid YAML, or does not hold a mapping.
    """
    if isinstance(path_or_mapping, Mapping):
        return dict(path_or_mapping)
    path = Path(path_or_mapping)
    try:
        data = yaml.safe_load(_read_text(path))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{where} ({problem})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values, "
                          f"got {type(data).__name__}")
    return data
