"""Train/val/test datasets from a `DataConfig`, for the LM and the classification commands.

- `lm_datasets(data_cfg)` -> `LMData` (train/val/test datasets, tokenizer, token streams for the
  Markov baselines) for `data.kind` genome | audio | recordings | digits (whole clips).
- `classification_datasets(data_cfg)` -> `ClassData` for species | labeled | splice | digits.
"""

from __future__ import annotations

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
    sample_rate: int | None = None

    def token_streams(self, split: str) -> list[np.ndarray]:
        """Every token of a split as 1-D id arrays, one per record or recording (the Markov
        baselines read them)."""
        out: dict[int, list] = {}
        for key, chunk in getattr(self, split).iter_tokens():
            out.setdefault(key, []).append(np.asarray(chunk, dtype=np.int64))
        return [np.concatenate(v) for v in out.values()]


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


def lm_datasets(d) -> LMData:
    """Train/val/test datasets for a causal LM from a DataConfig (kind genome, audio,
    recordings, or digits: whole clips)."""
    if d.kind == "genome":
        from mamba_bio_audio.data.genome import GenomeWindows

        fasta = Path(d.path) if d.path else mdata.YEAST_FASTA
        records = None if d.bed else genome_splits(fasta, d.splits)
        tok = mdata.DNATokenizer()
        common = dict(records=records, fractions=d.fractions, bed=d.bed, seed=d.seed, tokenizer=tok)
        train = GenomeWindows(fasta, d.seq_len, "train", num_samples=d.train_items,
                              rc_aug=d.rc_augment, **common)
        val = GenomeWindows(train.fasta, d.seq_len, "val", max_windows=d.val_items, **common)
        test = GenomeWindows(train.fasta, d.seq_len, "test", max_windows=d.test_items, **common)
        return LMData(train, val, test, tok, "dna")
    if d.kind in ("audio", "recordings"):
        return _recording_datasets(d)
    if d.kind == "digits":
        return _clip_datasets(d)
    raise ConfigError(f"data.kind={d.kind!r} is not a language-modelling dataset; use genome, "
                      "audio, recordings or digits")


def _clip_datasets(d) -> LMData:
    """Whole spoken-digit clips for an LM (SC09-style): the clips and splits of the digits
    classifier (`classification_datasets`; FSDD's official split for the bundled clips), as
    mu-law ids padded with silence to d.seq_len samples (`data.clips.WholeClips`)."""
    from mamba_bio_audio.data.clips import WholeClips

    if d.features != "waveform":
        raise ConfigError(f"data.features={d.features}: a language model of clips reads mu-law "
                          "samples; use data.features=waveform")
    clips = classification_datasets(d)
    train, val, test = (WholeClips(s) for s in (clips.train, clips.val, clips.test))
    return LMData(train, val, test, clips.tokenizer, "audio", d.sample_rate)


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
    common = dict(split_by=split_by, fractions=d.fractions, sample_rate=d.sample_rate, seed=d.seed,
                  tokenizer=tok)
    train = RecordingWindows(source, d.seq_len, "train", num_samples=d.train_items, **common)
    val = RecordingWindows(source, d.seq_len, "val", max_windows=d.val_items, **common)
    test = RecordingWindows(source, d.seq_len, "test", max_windows=d.test_items, **common)
    return LMData(train, val, test, tok, "audio", d.sample_rate)


def classification_datasets(d) -> ClassData:
    """Train/val/test datasets for a classifier from a DataConfig."""
    tok = mdata.DNATokenizer()
    if d.kind == "species":
        from mamba_bio_audio.data.species import SpeciesWindows

        folder = Path(d.path) if d.path else mdata.SPECIES_DIR
        common = dict(fractions=d.fractions, seed=d.seed, tokenizer=tok)
        train = SpeciesWindows(folder, d.seq_len, "train", num_samples=d.train_items,
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
        common = dict(seq_len=d.seq_len, fractions=d.fractions, seed=d.seed, tokenizer=tok)
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
        common = dict(seq_len=d.seq_len, sample_rate=d.sample_rate, split_by=split_by,
                      fractions=d.fractions, seed=d.seed, tokenizer=audio_tok)
        train = LabeledClips(folder, "train", **common)
        val = LabeledClips(folder, "val", **common)
        test = LabeledClips(folder, "test", **common)
        return ClassData(train, val, test, audio_tok, list(train.class_names), "audio",
                         {"sample_rate": d.sample_rate})
    raise ConfigError(f"data.kind={d.kind!r} is not a classification dataset; use species, "
                      "labeled, splice or digits")
