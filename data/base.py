"""What every dataset here shares: the split names, per-item random generators, the epoch."""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence

import numpy as np
from torch.utils.data import Dataset

from mamba_bio_audio.errors import DataError

SPLITS = ("train", "val", "test")


def check_split(split: str) -> str:
    """``split`` if it is "train", "val" or "test"; ValueError otherwise."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def window_mode(mode: str | None, split: str) -> str:
    """How a dataset draws windows: ``mode`` if given, else "random" for train and "sequential"
    for val/test; ValueError for anything else."""
    mode = mode or ("random" if split == "train" else "sequential")
    if mode not in ("random", "sequential"):
        raise ValueError(f"mode must be 'random' or 'sequential', got {mode!r}")
    return mode


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The random generator of item ``index`` in ``epoch``: a pure function of the three."""
    return np.random.default_rng([seed, epoch, index])


def sort_labels(labels) -> list[str]:
    """Distinct labels, sorted (numerically when all are integers, so "10" follows "9")."""
    labels = set(labels)
    if all(re.fullmatch(r"-?\d+", x) for x in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def class_names_for(where, labels: Sequence[str], splits: Sequence[str], split: str) -> list[str]:
    """The class names (the training split's labels, sorted) of items with ``labels`` in ``splits``.

    Raises DataError when val or test has a label that train lacks; warns when ``split`` lacks
    one of the classes.
    """
    by_split = {s: {lab for lab, sp in zip(labels, splits) if sp == s} for s in SPLITS}
    for s in ("val", "test"):
        extra = by_split[s] - by_split["train"]
        if extra:
            raise DataError(
                f"{where}: split {s!r} has labels {sorted(extra)} that do not appear in "
                f"split 'train'; every class must have training examples"
            )
    names = sort_labels(by_split["train"])
    missing = set(names) - by_split[split]
    if missing and by_split[split]:
        warnings.warn(
            f"{where}: split {split!r} has no examples of {sorted(missing)}", stacklevel=3
        )
    return names


class SplitDataset(Dataset):
    """Base class: ``split``, ``seed``, ``epoch``, ``num_samples`` items, ``class_names``."""

    epoch: int = 0
    num_samples: int = 0
    class_names: Sequence[str] = ()

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch: item i of epoch e depends only on (seed, e, i). Sequential
        (evaluation) windows and un-augmented items are the same in every epoch."""
        self.epoch = int(epoch)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return self.num_samples
