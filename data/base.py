"""What every dataset here shares: the split names and fractions, per-item random generators, the
epoch, and the window engine (random starts or tiles inside regions of sequences)."""

from __future__ import annotations

import hashlib
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


def fraction_bounds(length: int, split: str, fractions: Sequence[float]) -> tuple[int, int]:
    """[start, end) of ``split`` in a sequence of ``length`` cut into train | val | test parts."""
    check_split(split)
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(
            f"fractions must be three non-negative numbers summing to 1, got {fractions}"
        )
    cuts = [0, round(length * fractions[0]), round(length * (fractions[0] + fractions[1])), length]
    k = SPLITS.index(split)
    return cuts[k], cuts[k + 1]


def tile_starts(start: int, end: int, length: int, stride: int, cover: bool = False) -> list[int]:
    """Starts of the windows of ``length`` in [start, end) every ``stride``; with ``cover``, one
    more ending at ``end`` when the last stride leaves the end uncovered."""
    starts = list(range(start, end - length + 1, max(1, stride)))
    if cover and starts and starts[-1] + length < end:
        starts.append(end - length)
    return starts


class WindowEngine:
    """Windows inside regions: uniform random starts over every valid position, or tiles.

    Args:
        bounds: [start, end) of each region (in whatever unit the dataset counts: bases, frames).
        lengths: the window's length in each region (one length for all, or one per region, e.g.
            frames of recordings at different rates); every region must hold one window.

    ``random(rng)`` and ``tiles(...)`` return (region index, start) pairs. The genome, species and
    recording datasets draw their windows here, and ``predict`` tiles its inputs with
    ``tile_starts``.
    """

    def __init__(self, bounds: Sequence[tuple[int, int]], lengths: int | Sequence[int]):
        self.bounds = [(int(a), int(b)) for a, b in bounds]
        n = len(self.bounds)
        self.lengths = [int(lengths)] * n if isinstance(lengths, int) else [int(x) for x in lengths]
        counts = [b - a - w + 1 for (a, b), w in zip(self.bounds, self.lengths)]
        if not counts or min(counts) < 1:
            raise ValueError("every region must hold at least one window")
        self._cum = np.cumsum(counts)

    def random(self, rng: np.random.Generator) -> tuple[int, int]:
        """A window start drawn uniformly over every valid start of every region."""
        pos = int(rng.integers(self._cum[-1]))
        k = int(np.searchsorted(self._cum, pos, side="right"))
        return k, self.bounds[k][0] + pos - (int(self._cum[k - 1]) if k else 0)

    def tiles(self, strides: int | Sequence[int], max_windows: int | None = None
              ) -> list[tuple[int, int]]:
        """Windows from the start of each region every stride (one for all regions, or one per
        region); at most ``max_windows``, spread evenly."""
        if isinstance(strides, int):
            strides = [strides] * len(self.bounds)
        out = [(k, s) for k, ((a, b), w, step) in enumerate(zip(self.bounds, self.lengths, strides))
               for s in tile_starts(a, b, w, step)]
        if max_windows is not None and len(out) > max_windows:
            out = [out[i] for i in np.linspace(0, len(out) - 1, max_windows).round().astype(int)]
        return out


def assign_splits(
    keys: Sequence[str], labels: Sequence[str], fractions: Sequence[float], seed: int = 0
) -> list[str]:
    """Deterministic stratified split.

    Within each label, the distinct keys are ordered by a hash of (seed, key) and cut by
    ``fractions`` of the items; items with the same key (e.g. duplicate sequences) always share
    a split, so none leaks from train into val/test. The same file always gives the same split.
    """
    splits = [""] * len(keys)
    for label in sorted(set(labels)):
        groups: dict[str, list[int]] = {}
        for i, (key, lab) in enumerate(zip(keys, labels)):
            if lab == label:
                groups.setdefault(key, []).append(i)
        n = sum(len(g) for g in groups.values())
        cut1, cut2 = n * fractions[0], n * (fractions[0] + fractions[1])
        done = 0
        for key in sorted(groups, key=lambda k: hashlib.sha1(f"{seed}:{k}".encode()).hexdigest()):
            split = "train" if done < cut1 else "val" if done < cut2 else "test"
            for i in groups[key]:
                splits[i] = split
            done += len(groups[key])
    return splits


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
