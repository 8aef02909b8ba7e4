"""Species classification: windows from a folder of genomes, one FASTA file per species."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from mamba_bio_audio.errors import DataError

from .base import SplitDataset, check_split, item_rng, window_mode
from .fasta import FASTA_SUFFIXES, FastaFile, fasta_stem
from .genome import WindowSampler, split_regions
from .tokenizers import DNATokenizer


def find_fasta_files(folder: str | Path) -> list[Path]:
    """FASTA files of a folder, sorted: ``.fa``, ``.fasta``, ``.fna``, ``.fas``, optionally ``.gz``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: folder of FASTA files not found")
    suffixes = FASTA_SUFFIXES + tuple(s + ".gz" for s in FASTA_SUFFIXES)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(suffixes))
    if not files:
        raise DataError(
            f"{folder}: no FASTA files (expected names ending in {', '.join(suffixes)})"
        )
    return files


class SpeciesWindows(SplitDataset):
    """Windows of ``seq_len`` bases labelled with their species (= FASTA file stem, sorted).

    Every record of every genome is cut into train | val | test parts by ``fractions`` (the test
    part is the end of each record), or, for the species named in ``records``, whole records
    are held out; either way no window of one split overlaps another split.
    Random mode (default for train) is class-balanced: item i comes from class ``i % n_classes``.
    Sequential mode (default for val/test) tiles each species' part of the split.

    Items: ``{"ids": LongTensor (seq_len,), "mask": BoolTensor (seq_len,), "label": int}``.

    Args:
        folder: folder with one FASTA (plain or BGZF) per species.
        seq_len: window length in bases.
        split: "train", "val" or "test".
        fractions: train/val/test fractions of each record.
        records: {species: {split: [record names]}} to split those species by record instead
            (e.g. hold out V. cholerae's chromosome II); a species needs records in every split.
        mode: "random" or "sequential" (default: random for train, sequential otherwise).
        num_samples: items per epoch in random mode (default: split bases // seq_len).
        max_windows_per_class: in sequential mode, at most this many tiles per species.
        max_n_frac, rc_aug, seed, tokenizer: as in ``GenomeWindows``.
        skip_bad: skip species files that cannot be used (warn and count them in ``skipped``)
            instead of raising ``DataError``.
    """

    def __init__(
        self,
        folder: str | Path,
        seq_len: int,
        split: str = "train",
        fractions: Sequence[float] = (0.8, 0.1, 0.1),
        records: dict | None = None,
        mode: str | None = None,
        num_samples: int | None = None,
        max_windows_per_class: int | None = None,
        max_n_frac: float = 0.1,
        rc_aug: bool = False,
        seed: int = 0,
        tokenizer: DNATokenizer | None = None,
        skip_bad: bool = False,
    ):
        self.tokenizer = tokenizer or DNATokenizer()
        self.split, self.seed, self.rc_aug = check_split(split), int(seed), rc_aug
        self.mode = window_mode(mode, split)
        files = find_fasta_files(folder)
        stems = [fasta_stem(f) for f in files]
        dupes = sorted({s for s in stems if stems.count(s) > 1})
        if dupes:
            raise DataError(
                f"{folder}: several files for species {dupes} (e.g. both .fa and .fa.gz)"
            )
        unknown = sorted(set(records or {}) - set(stems))
        if unknown:
            raise DataError(f"{folder}: records= names species {unknown}, which have no FASTA file")
        self.files, self.class_names, self.samplers, self.skipped = [], [], [], []
        for path, stem in zip(files, stems):
            try:
                sampler, tiles = self._species_windows(
                    path, stem, seq_len, (records or {}).get(stem), fractions,
                    max_windows_per_class, max_n_frac)
            except DataError as e:
                if not skip_bad:
                    raise
                self.skipped.append(str(e))
                continue
            self.files.append(path)
            self.class_names.append(stem)
            self.samplers.append((sampler, tiles))
        if self.skipped:
            warnings.warn(
                f"{folder}: skipped {len(self.skipped)} of {len(files)} species files "
                f"that cannot be used; first: {self.skipped[0]}",
                stacklevel=2,
            )
        if len(self.class_names) < 2:
            raise DataError(
                f"{folder}: species classification needs at least 2 usable FASTA files, "
                f"found {len(self.class_names)}"
            )
        self.seq_len = int(seq_len)
        if self.mode == "random":
            total = sum(s.total_bases for s, _ in self.samplers)
            self.num_samples = num_samples or max(len(self.class_names), total // self.seq_len)
        else:
            self._index = [
                (label, k)
                for label, (_, tiles) in enumerate(self.samplers)
                for k in range(len(tiles))
            ]
            self.num_samples = len(self._index)

    def _species_windows(self, path, stem, seq_len, by_record, fractions, max_windows, max_n_frac):
        """(WindowSampler, tiles or None) of one species' part of the split; DataError if the
        file cannot be used (an all-N file fails its first random draw here)."""
        fasta = FastaFile(path)
        regions = split_regions(fasta, self.split, records=by_record, fractions=fractions)
        sampler = WindowSampler(fasta, regions, seq_len, self.tokenizer, max_n_frac,
                                what=f" (species {stem!r}, split {self.split!r})")
        if self.mode == "sequential":
            return sampler, sampler.tiles(None, max_windows)
        sampler.random_window(item_rng(self.seed, 0, 0))
        return sampler, None

    def set_seq_len(self, seq_len: int) -> None:
        """Random windows of ``seq_len`` bases from now on (<= the length it was built with, over
        the same regions): the trainer's sequence-length warm-up."""
        if self.mode != "random":
            raise ValueError("set_seq_len is for random windows (training)")
        for sampler, _ in self.samplers:
            sampler.set_seq_len(seq_len)
        self.seq_len = int(seq_len)

    def window(self, index: int):
        """(label, region, strand) of item ``index`` in the current epoch."""
        label, region, strand, _ = self._draw(index)
        return label, region, strand

    def _draw(self, index: int):
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} windows")
        if self.mode == "sequential":
            label, k = self._index[index]
            sampler, tiles = self.samplers[label]
            return label, tiles[k], "+", sampler.encode(tiles[k])
        label = index % self.num_classes
        rng = item_rng(self.seed, self.epoch, index)
        region, ids = self.samplers[label][0].random_window(rng)
        if self.rc_aug and rng.random() < 0.5:
            return label, region, "-", self.tokenizer.reverse_complement_ids(ids)
        return label, region, "+", ids

    def __getitem__(self, index: int) -> dict:
        label, _, _, ids = self._draw(index)
        return {"ids": ids, "mask": torch.ones(self.seq_len, dtype=torch.bool), "label": label}

    def iter_tokens(
        self, chunk_size: int = 1 << 20, label: int | None = None
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """Ids of the split's regions as (key, chunk), chunks with one key following on from
        each other; ``label`` restricts it to one species (e.g. for a per-class Markov model)."""
        offset = 0
        for lab, (sampler, _) in enumerate(self.samplers):
            if label is None or lab == label:
                for k, chunk in sampler.iter_tokens(chunk_size):
                    yield offset + k, chunk
            offset += len(sampler.regions)


__all__ = ["SpeciesWindows", "find_fasta_files"]
