"""Genome-window datasets: regions of a FASTA per split, and windows of ``seq_len`` bases in them.

``GenomeWindows`` is the pretraining dataset: windows of ``seq_len`` bases from the regions of one
split (by record name, by fraction of each record, or from a BED file). ``WindowSampler`` draws
them (through ``base.WindowEngine``) and is shared with the species dataset.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mamba_bio_audio.errors import ConfigError, DataError

from .base import (SPLITS, SplitDataset, WindowEngine, check_split, fraction_bounds, item_rng,
                   window_mode)
from .fasta import FastaFile
from .tokenizers import DNATokenizer


@dataclass(frozen=True)
class Region:
    """A half-open interval [start, end) of one record."""

    name: str
    start: int
    end: int

    def __len__(self) -> int:
        return self.end - self.start


def read_bed(path: str | Path) -> list[tuple[str, int, int, str | None]]:
    """Intervals of a BED file: (chrom, start, end, split or None), 0-based half-open.

    A fourth column, if present, is the split ("train", "val"/"valid", "test"), as in HyenaDNA's
    ``sequences.bed``. Lines starting with '#', 'track' or 'browser' are skipped.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: BED file not found")
    rows = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip() or line.startswith(("#", "track", "browser")):
                continue
            cols = line.rstrip("\n").split("\t") if "\t" in line else line.split()
            if len(cols) < 3:
                raise DataError(
                    f"{path}, line {lineno}: expected 'chrom start end [split]', "
                    f"got {line.strip()!r}"
                )
            try:
                start, end = int(cols[1]), int(cols[2])
            except ValueError:
                raise DataError(
                    f"{path}, line {lineno}: start and end must be integers, "
                    f"got {cols[1]!r}, {cols[2]!r}"
                )
            if not 0 <= start < end:
                raise DataError(
                    f"{path}, line {lineno}: expected 0 <= start < end, got {start}, {end}"
                )
            split = None
            if len(cols) >= 4 and cols[3].strip():
                split = {"valid": "val", "validation": "val"}.get(cols[3].strip(), cols[3].strip())
                if split not in SPLITS:
                    raise DataError(
                        f"{path}, line {lineno}: split must be train, val or test, got {cols[3]!r}"
                    )
            rows.append((cols[0], start, end, split))
    if not rows:
        raise DataError(f"{path}: BED file has no intervals")
    return rows


def split_regions(
    fasta: FastaFile,
    split: str,
    records: dict | None = None,
    fractions: Sequence[float] | None = (0.8, 0.1, 0.1),
    bed=None,
) -> list[Region]:
    """Regions of ``split``.

    Args:
        records: {split: [record names]}: whole records per split (other records are unused).
        fractions: without ``records``, every record is cut into train | val | test by these.
        bed: a BED file (or rows of ``read_bed``); with a split column its rows of ``split`` are
            used, otherwise each interval is cut by ``fractions``.
    """
    check_split(split)
    if bed is not None:
        rows = read_bed(bed) if isinstance(bed, (str, Path)) else bed
        regions = []
        for chrom, start, end, row_split in rows:
            if chrom not in fasta.lengths:
                raise DataError(
                    f"{fasta.path}: BED interval on {chrom!r}, which is not a record of the FASTA"
                )
            end = min(end, fasta.lengths[chrom])
            if row_split is not None:
                if row_split == split:
                    regions.append(Region(chrom, start, end))
            else:
                a, b = fraction_bounds(end - start, split, fractions)
                regions.append(Region(chrom, start + a, start + b))
        return regions
    if records is not None:
        unknown = set(records) - set(SPLITS)
        if unknown:
            raise ValueError(f"records keys must be train/val/test, got {sorted(unknown)}")
        for s, names in records.items():
            missing = [n for n in names if n not in fasta.lengths]
            if missing:
                raise DataError(
                    f"{fasta.path}: records {missing} of split {s!r} are not in the file; "
                    f"it has {fasta.names[:20]}"
                )
        return [Region(n, 0, fasta.lengths[n]) for n in records.get(split, [])]
    regions = []
    for name in fasta.names:
        a, b = fraction_bounds(fasta.lengths[name], split, fractions)
        regions.append(Region(name, a, b))
    return regions


class WindowSampler:
    """Windows of ``seq_len`` bases that lie inside given regions of a FASTA file.

    Random windows are drawn uniformly over all valid start positions (``base.WindowEngine``);
    windows with more than ``max_n_frac`` N (or other non-ACGT characters) are redrawn. Regions
    shorter than ``seq_len`` are skipped with a warning; if none is long enough, DataError.
    ``set_seq_len`` shortens the windows (sequence-length warm-up) over the same regions.
    """

    def __init__(
        self,
        fasta: FastaFile,
        regions: Sequence[Region],
        seq_len: int,
        tokenizer: DNATokenizer,
        max_n_frac: float = 0.1,
        max_tries: int = 64,
        what: str = "",
    ):
        if seq_len < 1:
            raise ValueError(f"seq_len must be positive, got {seq_len}")
        self.fasta, self.seq_len, self.tokenizer = fasta, int(seq_len), tokenizer
        self.max_n_frac, self.max_tries = max_n_frac, max_tries
        where = f"{fasta.path}{what}"
        if not regions:
            raise DataError(f"{where}: the split has no regions")
        short = [r for r in regions if len(r) < self.seq_len]
        self.regions = [r for r in regions if len(r) >= self.seq_len]
        if not self.regions:
            r = max(regions, key=len)
            raise DataError(
                f"{where}: record {r.name!r} ({r.name}:{r.start}-{r.end}, {len(r)} bp) is shorter "
                f"than the window of {self.seq_len} bp, and so is every other region of the split"
            )
        if short:
            warnings.warn(
                f"{where}: skipping {len(short)} region(s) shorter than the window of "
                f"{self.seq_len} bp (e.g. {short[0].name}:{short[0].start}-{short[0].end})",
                stacklevel=3,
            )
        self.longest = self.seq_len
        self.windows = WindowEngine([(r.start, r.end) for r in self.regions], self.seq_len)
        self.total_bases = int(sum(len(r) for r in self.regions))

    def set_seq_len(self, seq_len: int) -> None:
        """Windows of ``seq_len`` <= the length it was built with, from the same regions."""
        if seq_len > self.longest:
            raise ConfigError(f"train.seq_len_stages: {seq_len} is longer than data.seq_len="
                              f"{self.longest}, the longest window")
        self.seq_len = int(seq_len)
        self.windows = WindowEngine(self.windows.bounds, self.seq_len)

    def _too_many_n(self, ids: torch.Tensor) -> bool:
        return bool((ids == self.tokenizer.n_id).sum() > self.max_n_frac * ids.numel())

    def random_window(self, rng: np.random.Generator) -> tuple[Region, torch.Tensor]:
        """A random window (region of the window, ids) with at most ``max_n_frac`` N."""
        for _ in range(self.max_tries):
            k, start = self.windows.random(rng)
            window = Region(self.regions[k].name, start, start + self.seq_len)
            ids = self.encode(window)
            if not self._too_many_n(ids):
                return window, ids
        raise DataError(
            f"{self.fasta.path}: {self.max_tries} random windows of {self.seq_len} bp all had more "
            f"than {self.max_n_frac:.0%} N; is the sequence (almost) all N?"
        )

    def tiles(self, stride: int | None = None, max_windows: int | None = None) -> list[Region]:
        """Windows from the start of each region every ``stride`` bases (default: ``seq_len``),
        skipping those with too many N; at most ``max_windows``, spread evenly."""
        out = [Region(self.regions[k].name, s, s + self.seq_len)
               for k, s in self.windows.tiles(stride or self.seq_len, max_windows)]
        kept = [w for w in out if not self._too_many_n(self.encode(w))]
        if not kept:
            raise DataError(
                f"{self.fasta.path}: every evaluation window of {self.seq_len} bp has more than "
                f"{self.max_n_frac:.0%} N; is the sequence (almost) all N?"
            )
        return kept

    def encode(self, window: Region) -> torch.Tensor:
        return self.tokenizer.encode(self.fasta.fetch(window.name, window.start, window.end))

    def iter_tokens(self, chunk_size: int = 1 << 20) -> Iterator[tuple[int, torch.Tensor]]:
        """All ids of the regions, as (region index, chunk) in order; chunks with the same index
        follow on from each other. Reads ``chunk_size`` bases at a time."""
        for k, region in enumerate(self.regions):
            for start in range(region.start, region.end, chunk_size):
                end = min(start + chunk_size, region.end)
                yield k, self.tokenizer.encode(self.fasta.fetch(region.name, start, end))


class GenomeWindows(SplitDataset):
    """Windows of a reference genome for causal-LM pretraining.

    Item i of epoch e depends only on (seed, e, i). Items are ``{"ids": LongTensor (seq_len,),
    "mask": BoolTensor (seq_len,)}`` (the mask is all True: windows are never padded).

    Args:
        fasta: FASTA file (plain or BGZF ``.gz``) or an open ``FastaFile``.
        seq_len: window length in bases.
        split: "train", "val" or "test".
        records: {split: [record names]} to split by record (e.g. chromosomes);
            otherwise each record (or BED interval) is cut by ``fractions``.
        fractions: train/val/test fractions of each record (the test part is the end).
        bed: BED file of intervals (chrom, start, end[, split]) to sample from.
        mode: "random" (uniform windows, ``num_samples`` per epoch; the default for train) or
            "sequential" (non-overlapping tiles with ``stride``, for evaluation).
        num_samples: items per epoch in random mode (default: split length // seq_len, at least 1).
        max_windows: in sequential mode, keep at most this many tiles (evenly spread).
        max_n_frac: windows with more N than this fraction are redrawn (random) or skipped
            (sequential).
        rc_aug: reverse-complement each random window with probability 1/2.
        seed: base seed.
        tokenizer: a ``DNATokenizer`` (default one if None).
    """

    def __init__(
        self,
        fasta,
        seq_len: int,
        split: str = "train",
        records: dict | None = None,
        fractions: Sequence[float] = (0.8, 0.1, 0.1),
        bed=None,
        mode: str | None = None,
        num_samples: int | None = None,
        stride: int | None = None,
        max_windows: int | None = None,
        max_n_frac: float = 0.1,
        rc_aug: bool = False,
        seed: int = 0,
        tokenizer: DNATokenizer | None = None,
    ):
        self.fasta = fasta if isinstance(fasta, FastaFile) else FastaFile(fasta)
        self.tokenizer = tokenizer or DNATokenizer()
        self.split, self.seed, self.rc_aug = check_split(split), int(seed), rc_aug
        self.mode = window_mode(mode, split)
        regions = split_regions(self.fasta, split, records=records, fractions=fractions, bed=bed)
        self.sampler = WindowSampler(
            self.fasta, regions, seq_len, self.tokenizer, max_n_frac, what=f" (split {split!r})"
        )
        self.seq_len = self.sampler.seq_len
        if self.mode == "random":
            self.num_samples = num_samples or max(1, self.sampler.total_bases // self.seq_len)
            self.sampler.random_window(item_rng(self.seed, 0, 0))  # fail now on an all-N file
        else:
            self.tiles = self.sampler.tiles(stride, max_windows)
            self.num_samples = len(self.tiles)

    @property
    def regions(self) -> list[Region]:
        """The regions of this split that windows are drawn from."""
        return self.sampler.regions

    def set_seq_len(self, seq_len: int) -> None:
        """Random windows of ``seq_len`` bases from now on (<= the length it was built with, over
        the same regions): the trainer's sequence-length warm-up."""
        if self.mode != "random":
            raise ValueError("set_seq_len is for random windows (training)")
        self.sampler.set_seq_len(seq_len)
        self.seq_len = self.sampler.seq_len

    def window(self, index: int) -> tuple[Region, str]:
        """(region, strand "+" or "-") of item ``index`` in the current epoch."""
        return self._draw(index)[:2]

    def _draw(self, index: int):
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} windows")
        if self.mode == "sequential":
            w = self.tiles[index]
            return w, "+", self.sampler.encode(w)
        rng = item_rng(self.seed, self.epoch, index)
        w, ids = self.sampler.random_window(rng)
        if self.rc_aug and rng.random() < 0.5:
            return w, "-", self.tokenizer.reverse_complement_ids(ids)
        return w, "+", ids

    def __getitem__(self, index: int) -> dict:
        ids = self._draw(index)[2]
        return {"ids": ids, "mask": torch.ones(self.seq_len, dtype=torch.bool)}

    def iter_tokens(self, chunk_size: int = 1 << 20) -> Iterator[tuple[int, torch.Tensor]]:
        """All ids of the split as (region index, chunk); see ``WindowSampler.iter_tokens``."""
        return self.sampler.iter_tokens(chunk_size)
