"""Argument types and model-folder lookup shared by the commands that read a checkpoint.

Light on purpose (no torch): `add_arguments` of every command runs before its work starts, so that
`--help` and argument errors answer at once.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mamba_bio_audio.errors import CheckpointError


def _number(text: str, kind, ok, expected: str):
    """`text` as an int or float for which ok(value) holds, else an argparse error."""
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not ok(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _number(text, int, lambda v: v >= 1, "an integer >= 1")


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _number(text, int, lambda v: v >= 0, "an integer >= 0")


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    return _number(text, float, lambda v: 0 < v < float("inf"), "a number > 0")


def probability(text: str) -> float:
    """argparse type: a number in (0, 1]."""
    return _number(text, float, lambda v: 0 < v <= 1, "a number in (0, 1]")


MAKERS = {"MambaLM": "a language model (from `pretrain` or `finetune`)",
          "MambaClassifier": "a classifier (from `classify`)"}


def model_folder(path: str | Path, option: str = "--model", want: str | None = None) -> Path:
    """The model folder that `path` names: a checkpoint folder (config.json), or a run folder
    (its checkpoints/best, else checkpoints/last). CheckpointError when it is neither, or when
    it holds one of our models other than `want` ("MambaLM" or "MambaClassifier")."""
    path = Path(path)
    found = next((p for p in (path, path / "checkpoints" / "best", path / "checkpoints" / "last")
                  if (p / "config.json").is_file()), None)
    if found is not None:
        if want is not None:
            _check_kind(found, option, path, want)
        return found
    if not path.exists():
        raise CheckpointError(f"{option} {path}: no such folder; expected a run folder "
                              "(runs/X) or a checkpoint folder (runs/X/checkpoints/best)")
    if not path.is_dir():
        raise CheckpointError(f"{option} {path}: is a file; expected a run folder (runs/X) or a "
                              "checkpoint folder (runs/X/checkpoints/best)")
    raise CheckpointError(f"{option} {path}: config.json is missing; expected a run folder "
                          "(runs/X) or a checkpoint folder (runs/X/checkpoints/best)")


def _check_kind(folder: Path, option: str, given: Path, want: str) -> None:
    import json

    try:
        kind = json.loads((folder / "config.json").read_text()).get("model_type")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return  # the loader names the broken file
    if kind in MAKERS and kind != want:
        raise CheckpointError(f"{option} {given}: holds {MAKERS[kind]} ({kind}); this command "
                              f"needs {MAKERS[want]} ({want})")
