"""What the pipelines share between the config and the trainer: datasets from a `DataConfig`, the
loss functions, and the tokenizer settings that are saved with a model.

- `lm_datasets(data_cfg)` -> `LMData` (train/val/test datasets, tokenizer, token streams for the
  Markov baselines) for `data.kind` genome | audio | recordings.
- `classification_datasets(data_cfg)` -> `ClassData` for species | labeled | splice | digits.
- `lm_loss` (next-token cross-entropy) and `classifier_loss` (cross-entropy + accuracy).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mamba_bio_audio import data as mdata
from mamba_bio_audio.errors import CheckpointError, ConfigError
from mamba_bio_audio.modules import context_parallel

from .trainer import LossOutput

TOKENIZER_FILE = "tokenizer.json"
DATA_FILE = "data_config.json"


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


def lm_loss(model, batch: dict) -> LossOutput:
    """Next-token cross-entropy in nats; logits at t predict ids[t + 1].

    The full window goes through the model (so U-Net lengths stay divisible by the pooling) and
    the last position's logits are dropped.
    """
    ids = batch["ids"]  # (b, l)
    if getattr(model, "module", model).config.rc_equivariant:
        return _lm_loss_both_strands(model, ids, batch.get("mask"))
    cp = context_parallel.active()
    if cp is not None:
        return _lm_loss_context_parallel(model, ids, batch.get("mask"), cp)
    logits = model(ids)[:, :-1]  # (b, l-1, V)
    targets = ids[:, 1:]
    mask = batch.get("mask")
    losses = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                             reduction="none")
    if mask is not None:
        m = mask[:, 1:].reshape(-1).float()
        n = m.sum().clamp_min(1)
        loss = (losses * m).sum() / n
        return LossOutput(loss, float(n), int(ids.numel()))
    return LossOutput(losses.mean(), float(targets.numel()), int(ids.numel()))


def _lm_loss_both_strands(model, ids, mask) -> LossOutput:
    """`lm_loss` of an RC-equivariant LM: the mean cross-entropy of its next-base head (logits at
    t predict ids[t + 1]) and of its previous-base head (logits at t predict ids[t - 1]), i.e. of
    the window read on both strands."""
    both = model(ids, both_strands=True).float()  # (b, l, 2, V)
    V = both.shape[-1]
    losses = torch.cat([
        F.cross_entropy(both[:, :-1, 0].reshape(-1, V), ids[:, 1:].reshape(-1), reduction="none"),
        F.cross_entropy(both[:, 1:, 1].reshape(-1, V), ids[:, :-1].reshape(-1), reduction="none")])
    m = (torch.ones_like(ids[:, 1:], dtype=torch.bool) if mask is None else mask[:, 1:])
    m = m.reshape(-1).float().repeat(2)
    n = m.sum().clamp_min(1)
    return LossOutput((losses * m).sum() / n, float(n), int(ids.numel()))


def rc_model_fields(model_cfg, tokenizer) -> dict:
    """MambaConfig fields that an RC-equivariant model takes from the data's tokenizer (its
    complement map); {} for other models."""
    if not model_cfg.rc_equivariant:
        return {}
    return {"rc_equivariant": True, "complement": tokenizer.complement_ids}


def _lm_loss_context_parallel(model, ids, mask, cp) -> LossOutput:
    """`lm_loss` with the window split over a context-parallel group (every rank holds the whole
    batch and runs the model on its slice; the last position of a slice predicts the next slice's
    first token). Each rank's loss is scaled so that the ranks' gradients, averaged as DDP does,
    are those of one process on whole windows, and its weight so that the logged mean is too."""
    s = ids.shape[1] // cp.size
    local = context_parallel.local_slice(ids, cp)
    targets = ids[:, cp.rank * s + 1:(cp.rank + 1) * s + 1]  # one fewer on the last rank
    logits = model(local)[:, :targets.shape[1]]
    losses = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                             reduction="none")
    if mask is not None:
        m = mask[:, cp.rank * s + 1:(cp.rank + 1) * s + 1].reshape(-1).float()
        losses, n = losses * m, float(mask[:, 1:].sum().clamp_min(1))
    else:
        n = float(ids.shape[0] * (ids.shape[1] - 1))
    return LossOutput(losses.sum() * cp.size / n, n / cp.size, int(local.numel()))


def classifier_loss(model, batch: dict) -> LossOutput:
    """Cross-entropy of the class logits; `sums["accuracy"]` counts the correct predictions.

    Under context parallelism every rank runs its slice and the pooling sums over the slices,
    so all ranks hold the same logits: each counts 1/size of the examples."""
    ids, mask = batch["ids"], batch.get("mask")
    cp = context_parallel.active()
    share = 1
    if cp is not None:
        ids = context_parallel.local_slice(ids, cp)
        mask = context_parallel.local_slice(mask, cp) if mask is not None else None
        share = cp.size
    logits = model(ids, mask=mask)  # (b, n_classes)
    labels = batch["label"]
    loss = F.cross_entropy(logits.float(), labels)
    correct = (logits.argmax(-1) == labels).sum()
    tokens = math.prod(ids.shape[:2])  # positions (frames for float features)
    return LossOutput(loss, float(labels.numel()) / share, int(tokens),
                      {"accuracy": float(correct) / share})


@torch.no_grad()
def class_probabilities(model, ids: torch.Tensor, mask: torch.Tensor,
                        rc_tokenizer=None) -> torch.Tensor:
    """Softmax class probabilities (b, n_classes) of a classifier for a padded batch.

    With `rc_tokenizer` (a DNA tokenizer; `data.rc_test`), the mean of the probabilities of each
    sequence and of its reverse complement: a strand-symmetric prediction."""
    probs = torch.softmax(model(ids, mask=mask).float(), -1)
    if rc_tokenizer is not None:
        rc = rc_tokenizer.reverse_complement_ids(ids, mask)
        probs = (probs + torch.softmax(model(rc, mask=mask).float(), -1)) / 2
    return probs


def predict_proba(model, dataset, batch_size: int, device, progress: bool = True,
                  desc: str = "predict", rc_tokenizer=None) -> tuple[np.ndarray, np.ndarray | None]:
    """Class probabilities (n, n_classes) of a classifier over a dataset, and the labels if any.
    `rc_tokenizer`: average each item with its reverse complement (see class_probabilities)."""
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    model.eval()
    probs, labels = [], []
    for batch in tqdm(DataLoader(dataset, batch_size=batch_size), desc=desc, leave=False,
                      disable=not progress):
        probs.append(class_probabilities(model, batch["ids"].to(device),
                                         batch["mask"].to(device), rc_tokenizer).cpu().numpy())
        if "label" in batch:
            labels.append(np.asarray(batch["label"]))
    return np.concatenate(probs), (np.concatenate(labels) if labels else None)


@torch.no_grad()
def rc_flip_fraction(model, dataset, batch_size: int, device, tokenizer) -> float:
    """The fraction of a DNA dataset's items whose call (the argmax class of the model on one
    strand) changes when the item is reverse-complemented: 0 for an RC-invariant classifier."""
    from torch.utils.data import DataLoader

    model.eval()
    flips = n = 0
    for batch in DataLoader(dataset, batch_size=batch_size):
        ids, mask = batch["ids"].to(device), batch["mask"].to(device)
        rc = tokenizer.reverse_complement_ids(ids, mask)
        flips += int((model(ids, mask=mask).argmax(-1) != model(rc, mask=mask).argmax(-1)).sum())
        n += ids.shape[0]
    return flips / max(n, 1)


def bits(nats: float) -> float:
    return nats / math.log(2)


def save_tokenizer(tokenizer, data_cfg=None) -> dict:
    """{file name: text} to write beside a model checkpoint: the tokenizer's settings and the
    `data:` section it was trained with (window length, sample rate: read by predict/generate)."""
    from mamba_bio_audio.config import to_dict

    files = {TOKENIZER_FILE: json.dumps(tokenizer.to_dict(), indent=2) + "\n"}
    if data_cfg is not None:
        files[DATA_FILE] = json.dumps(to_dict(data_cfg), indent=2) + "\n"
    return files


def load_data_config(model_dir: str | Path) -> dict:
    """The `data:` section saved with a checkpoint ({} when there is none)."""
    path = Path(model_dir) / DATA_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def load_tokenizer(model_dir: str | Path):
    """The tokenizer saved with a checkpoint (tokenizer.json)."""
    path = Path(model_dir) / TOKENIZER_FILE
    if not path.is_file():
        raise CheckpointError(f"{model_dir}: {TOKENIZER_FILE} is missing; is this a checkpoint "
                              "written by mamba-bio-audio?")
    return mdata.tokenizer_from_dict(json.loads(path.read_text()))


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
