"""Train/val/test datasets from a `DataConfig`, for the LM and the classification commands.

- `lm_datasets(data_cfg)` -> `LMData` (train/val/test datasets, tokenizer, token streams for the
  Markov baselines) for `data.kind` genome | audio | recordings.
- `classification_datasets(data_cfg)` -> `ClassData` for species | labeled | splice | digits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mamba_bio_audio import data as mdata
from mamba_bio_audio.errors import ConfigError


@dataclass
class LMData:
    """Datasets of a language-modelling job."""

    train: Any
    val: Any
    test: Any
    tokenizer: Any
    modality: str  # "dna" or "audio"
    token_streams: Callable[[str], list] = None  # split -> list of 1-D id arrays (Markov baseline)
    sample_rate: int | None = None


@dataclass
class ClassData:
    """Datasets of a classification job; items are {"ids", "mask", "label"}."""

    train: Any
    val: Any
    test: Any
    tokenizer: Any
    class_names: list
    modality: str
    extra: dict = field(default_factory=dict)


def genome_splits(fasta, splits: dict) -> dict | None:
    """Chromosome lists per split: the config's, the bundled yeast ones, or None (fractions)."""
    if splits:
        unknown = set(splits) - {"train", "val", "test"}
        if unknown:
            raise ConfigError(f"data.splits: keys must be train, val, test; got {sorted(unknown)}")
        return {k: list(v) for k, v in splits.items()}
    if Path(fasta) == mdata.YEAST_FASTA:
        return mdata.YEAST_SPLITS
    return None


def _staged(cls):
    """A subclass of a window dataset (random mode) whose window length can change between the
    trainer's sequence-length warm-up stages (`set_seq_len(L)`, L <= the length it was built with;
    regions too short for that longest length are left out of every stage)."""
    from mamba_bio_audio.data.fasta import WindowSampler

    def resample_windows(sampler, seq_len, what):
        return WindowSampler(sampler.fasta, sampler.regions, seq_len, sampler.tokenizer,
                             sampler.max_n_frac, what=what)

    def set_seq_len(self, seq_len: int) -> None:
        longest = self.__dict__.setdefault("_longest", self.seq_len)
        if seq_len > longest:
            raise ConfigError(f"train.seq_len_stages: {seq_len} is longer than data.seq_len="
                              f"{longest}, the longest window")
        what = f" (split {self.split!r})"
        if hasattr(self, "samplers"):  # species: one sampler per class
            base = self.__dict__.setdefault("_base", list(self.samplers))
            self.samplers = [(resample_windows(s, seq_len, what), t) for s, t in base]
        elif hasattr(self, "sampler"):  # one genome
            base = self.__dict__.setdefault("_base", self.sampler)
            self.sampler = resample_windows(base, seq_len, what)
        self.seq_len = int(seq_len)
        if hasattr(self, "_cum") and hasattr(self, "_src_len"):  # recordings
            self._cum = np.cumsum([r.end - r.start - self._src_len(r) + 1 for r in self.regions])

    return type(f"Staged{cls.__name__}", (cls,), {"set_seq_len": set_seq_len,
                                                  "__doc__": cls.__doc__})


def lm_datasets(d) -> LMData:
    """Train/val/test datasets for a causal LM from a DataConfig (kind genome or audio)."""
    if d.kind == "genome":
        from mamba_bio_audio.data.fasta import GenomeWindows

        fasta = Path(d.path) if d.path else mdata.YEAST_FASTA
        records = None if d.bed else genome_splits(fasta, d.splits)
        tok = mdata.DNATokenizer()
        frac = (1 - d.val_fraction - d.test_fraction, d.val_fraction, d.test_fraction)
        common = dict(records=records, fractions=frac, bed=d.bed, seed=d.seed, tokenizer=tok)
        train = _staged(GenomeWindows)(fasta, d.seq_len, "train", num_samples=d.train_items,
                              rc_aug=d.rc_augment, **common)
        val = GenomeWindows(train.fasta, d.seq_len, "val", max_windows=d.val_items, **common)
        test = GenomeWindows(train.fasta, d.seq_len, "test", max_windows=d.test_items, **common)

        def streams(split):
            ds = {"train": train, "val": val, "test": test}[split]
            return _collect_streams(ds.iter_tokens())

        return LMData(train, val, test, tok, "dna", streams)
    if d.kind in ("audio", "recordings"):
        return _recording_datasets(d)
    raise ConfigError(f"data.kind={d.kind!r} is not a language-modelling dataset; use genome or "
                      "audio")


def _collect_streams(chunks) -> list[np.ndarray]:
    """Join (key, chunk) pairs into one array per key."""
    out: dict[int, list] = {}
    for key, chunk in chunks:
        out.setdefault(key, []).append(np.asarray(chunk, dtype=np.int64))
    return [np.concatenate(v) for v in out.values()]


def _recording_datasets(d) -> LMData:
    """Windows of recordings, mu-law ids at d.sample_rate. Defaults: kind=audio reads the bundled
    spoken digits (3,000 short clips, split by file), kind=recordings the bundled long recordings
    (each split by time: the first 80 % train, then 10 % val, 10 % test)."""
    from mamba_bio_audio.data.recordings import RecordingWindows

    default_dir, default_split = ((mdata.FSDD_DIR, "file") if d.kind == "audio"
                                  else (mdata.LONG_AUDIO_DIR, "time"))
    source = d.path or default_dir
    split_by = default_split if d.split_by == "auto" else d.split_by
    tok = mdata.MuLaw(d.mu_law_levels)
    frac = (1 - d.val_fraction - d.test_fraction, d.val_fraction, d.test_fraction)
    common = dict(split_by=split_by, fractions=frac, sample_rate=d.sample_rate, seed=d.seed,
                  tokenizer=tok)
    train = _staged(RecordingWindows)(source, d.seq_len, "train", num_samples=d.train_items,
                                      **common)
    val = RecordingWindows(source, d.seq_len, "val", max_windows=d.val_items, **common)
    test = RecordingWindows(source, d.seq_len, "test", max_windows=d.test_items, **common)

    def streams(split):
        ds = {"train": train, "val": val, "test": test}[split]
        return _collect_streams(ds.iter_tokens())

    return LMData(train, val, test, tok, "audio", streams, d.sample_rate)


def classification_datasets(d) -> ClassData:
    """Train/val/test datasets for a classifier from a DataConfig."""
    tok = mdata.DNATokenizer()
    if d.kind == "species":
        from mamba_bio_audio.data.species import SpeciesWindows

        folder = Path(d.path) if d.path else mdata.SPECIES_DIR
        frac = (1 - d.val_fraction - d.test_fraction, d.val_fraction, d.test_fraction)
        common = dict(fractions=frac, seed=d.seed, tokenizer=tok)
        train = _staged(SpeciesWindows)(folder, d.seq_len, "train", num_samples=d.train_items,
                               rc_aug=d.rc_augment, **common)
        n = train.num_classes
        val = SpeciesWindows(folder, d.seq_len, "val", max_windows_per_class=max(1, d.val_items // n),
                             **common)
        test = SpeciesWindows(folder, d.seq_len, "test",
                              max_windows_per_class=max(1, d.test_items // n), **common)
        return ClassData(train, val, test, tok, list(train.class_names), "dna")
    if d.kind in ("labeled", "splice"):
        from mamba_bio_audio.data.labeled import LabeledSequences

        if d.kind == "labeled" and not d.path:
            raise ConfigError("data.kind=labeled needs data.path=FILE or FOLDER (CSV/TSV with "
                              "sequence and label columns, FASTA with label=X in the headers, or "
                              "a Genomic Benchmarks folder {train,test}/<class>/*.txt)")
        path = Path(d.path) if d.path else mdata.SPLICE_DATA
        if d.path in mdata.GENOMIC_BENCHMARKS and not path.exists():  # a bundled one, by name
            path = mdata.GENOMIC_BENCHMARKS[d.path]
        frac = (1 - d.val_fraction - d.test_fraction, d.val_fraction, d.test_fraction)
        common = dict(seq_len=d.seq_len, fractions=frac, seed=d.seed, tokenizer=tok)
        train = LabeledSequences(path, "train", rc_aug=d.rc_augment, **common)
        val = LabeledSequences(path, "val", **common)
        test = LabeledSequences(path, "test", **common)
        return ClassData(train, val, test, tok, list(train.class_names), "dna")
    if d.kind == "digits":
        from mamba_bio_audio.data.recordings import LabeledClips

        folder = Path(d.path) if d.path else mdata.FSDD_DIR
        audio_tok = (mdata.LogMel(d.sample_rate, d.n_mels) if d.features == "mel"
                     else mdata.MuLaw(d.mu_law_levels))
        # FSDD's official split (test = clip indices 0-4) for the bundled data, else stratified.
        split_by = "fsdd" if not d.path else "hash"
        frac = (1 - d.val_fraction - d.test_fraction, d.val_fraction, d.test_fraction)
        common = dict(seq_len=d.seq_len, sample_rate=d.sample_rate, split_by=split_by,
                      fractions=frac, seed=d.seed, tokenizer=audio_tok)
        train = LabeledClips(folder, "train", **common)
        val = LabeledClips(folder, "val", **common)
        test = LabeledClips(folder, "test", **common)
        return ClassData(train, val, test, audio_tok, list(train.class_names), "audio",
                         {"sample_rate": d.sample_rate})
    raise ConfigError(f"data.kind={d.kind!r} is not a classification dataset; use species, "
                      "labeled, splice or digits")
