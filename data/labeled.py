"""Labelled DNA sequences: CSV/TSV files, FASTA with the label in the header, UCI splice junctions.

``read_labeled`` parses a file into ``LabeledRecord``s; ``LabeledSequences`` is the dataset.
"""

from __future__ import annotations

import csv
import gzip
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from Bio import SeqIO

from mamba_bio_audio.errors import DataError

from .base import SplitDataset, assign_splits, check_split, class_names_for, item_rng
from .tokenizers import DNATokenizer

SPLIT_ALIASES = {
    "train": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
}


@dataclass
class LabeledRecord:
    """One sequence, its label, where it came from (for messages), its split if the file has one."""

    name: str
    sequence: str
    label: str
    where: str
    split: str | None = None


def _detect_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".csv", ".csv.gz")):
        return "csv"
    if name.endswith((".tsv", ".tsv.gz", ".txt")):
        return "tsv"
    if name.endswith((".fa", ".fasta", ".fna", ".fas")):
        return "fasta"
    if name.endswith(".data"):
        return "uci"
    raise DataError(
        f"{path}: cannot tell the format from the file name; pass format='csv', 'tsv', "
        f"'fasta' or 'uci'"
    )


def _parse_split(value: str, where: str) -> str:
    split = SPLIT_ALIASES.get(value.strip().lower())
    if split is None:
        raise DataError(f"{where}: split must be train, val or test, got {value!r}")
    return split


def _read_table(
    path: Path,
    delimiter: str,
    sequence_column: str | None,
    label_column: str,
    split_column: str | None,
) -> list[LabeledRecord]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    # utf-8-sig: a spreadsheet's byte-order mark is not part of the first column's name;
    # newline="": the csv module handles CRLF line ends itself
    with opener(path, "rt", newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        columns = [c.strip() for c in reader.fieldnames or []]
        reader.fieldnames = columns
        if not columns:
            raise DataError(f"{path}: the file is empty; expected a header line with columns")
        seq_col = sequence_column or next((c for c in ("seq", "sequence") if c in columns), "seq")
        missing = [c for c in (seq_col, label_column) if c not in columns]
        if missing:
            raise DataError(
                f"{path}: no column {missing[0]!r}; the header has {columns}, expected a "
                f"'sequence' (or 'seq') column and a {label_column!r} column (optional 'split')"
            )
        use_split = split_column is not None and split_column in columns
        records = []
        for row in reader:
            where = f"{path}, line {reader.line_num}"
            seq, label = (row.get(seq_col) or "").strip(), (row.get(label_column) or "").strip()
            if not seq:
                raise DataError(f"{where}: empty sequence in column {seq_col!r}")
            if not label:
                raise DataError(f"{where}: empty label in column {label_column!r}")
            split = _parse_split(row[split_column] or "", where) if use_split else None
            records.append(LabeledRecord(f"line{reader.line_num}", seq, label, where, split))
    return records


def _read_fasta(path: Path) -> list[LabeledRecord]:
    """Records whose header is ``>name label`` (last word) or contains ``label=X``."""
    with open(path) as f:
        first = f.read(1)
    if first != ">":
        raise DataError(f"{path}: not a FASTA file: it should start with a '>' header line")
    records = []
    for k, rec in enumerate(SeqIO.parse(str(path), "fasta"), 1):
        where = f"{path}, record {k} ({rec.id!r})"
        words = rec.description.split()
        tagged = re.search(r"label=(\S+)", rec.description)
        if tagged:
            label = tagged.group(1)
        elif len(words) >= 2:
            label = words[-1]
        else:
            raise DataError(
                f"{where}: no label in the header; expected '>name label' or '>name label=X'"
            )
        seq = str(rec.seq)
        if not seq:
            raise DataError(f"{where}: empty sequence")
        split_tag = re.search(r"split=(\S+)", rec.description)
        split = _parse_split(split_tag.group(1), where) if split_tag else None
        records.append(LabeledRecord(rec.id, seq, label, where, split))
    return records


def _read_uci(path: Path) -> list[LabeledRecord]:
    """UCI splice-junction format: ``class, instance name, sequence`` per line."""
    records = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = re.split(r",\s*", line.strip())
            where = f"{path}, line {lineno}"
            if len(parts) != 3:
                raise DataError(
                    f"{where}: expected 'class, name, sequence', got {line.strip()[:60]!r}"
                )
            label, name, seq = parts
            if not seq:
                raise DataError(f"{where}: empty sequence")
            records.append(LabeledRecord(name, seq, label, where))
    return records


def _read_folder(path: Path) -> list[LabeledRecord]:
    """The Genomic Benchmarks layout (what the ``genomic-benchmarks`` package downloads):
    ``<name>/{train,test}/<class>/*.txt``, one sequence a file; the split folders are the
    official split. A folder of ``<class>/*.txt`` alone (no split folders) is read too."""
    children = sorted(c for c in path.iterdir() if c.is_dir() and not c.name.startswith("."))
    split_dirs = [c for c in children if c.name.lower() in SPLIT_ALIASES]
    if split_dirs and len(split_dirs) != len(children):
        other = next(c for c in children if c not in split_dirs)
        raise DataError(f"{path}: mixes split folders ({', '.join(c.name for c in split_dirs)}) "
                        f"and {other.name!r}; expected <folder>/{{train,test}}/<class>/*.txt")
    parts = [(c, SPLIT_ALIASES[c.name.lower()]) for c in split_dirs] or [(path, None)]
    records = []
    for root, split in parts:
        classes = sorted(c for c in root.iterdir() if c.is_dir() and not c.name.startswith("."))
        if not classes:
            raise DataError(f"{root}: no class folders; expected <folder>/{{train,test}}/"
                            "<class>/*.txt (one sequence a file), as genomic-benchmarks writes")
        for folder in classes:
            files = sorted(folder.glob("*.txt"))
            if not files:
                raise DataError(f"{folder}: no .txt files (one sequence a file)")
            for f in files:
                try:
                    seq = "".join(f.read_text(encoding="ascii").split())
                except UnicodeDecodeError:
                    raise DataError(f"{f}: not a text file of nucleotides") from None
                if not seq:
                    raise DataError(f"{f}: empty sequence")
                records.append(LabeledRecord(f.stem, seq, folder.name, str(f), split))
    return records


def read_labeled(
    path: str | Path,
    format: str | None = None,
    sequence_column: str | None = None,
    label_column: str = "label",
    split_column: str | None = "split",
) -> list[LabeledRecord]:
    """Parse a labelled-sequence file.

    Args:
        path: the file, or a folder in the Genomic Benchmarks layout
            ``{train,test}/<class>/*.txt`` (the split folders give the split).
        format: "csv", "tsv", "fasta" or "uci" (default: from the file name).
        sequence_column: CSV/TSV column with the sequence (default "seq" or "sequence").
        label_column: CSV/TSV column with the label.
        split_column: CSV/TSV column with the split, used when present (FASTA: ``split=X`` in
            headers).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: labelled-sequence file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    if path.is_dir():
        return _read_folder(path)
    format = format or _detect_format(path)
    readers = {"csv": lambda: _read_table(path, ",", sequence_column, label_column, split_column),
               "tsv": lambda: _read_table(path, "\t", sequence_column, label_column, split_column),
               "fasta": lambda: _read_fasta(path), "uci": lambda: _read_uci(path)}
    if format not in readers:
        raise ValueError(f"format must be 'csv', 'tsv', 'fasta' or 'uci', got {format!r}")
    try:
        records = readers[format]()
    except (UnicodeDecodeError, EOFError, gzip.BadGzipFile) as err:
        raise DataError(f"{path}: not a {format.upper()} text file ({err})") from None
    if not records:
        raise DataError(f"{path}: no sequences found")
    return records


def _val_from_train(records, splits, fractions, seed) -> list[str]:
    """Move a stratified, deterministic share of the train items to val (see LabeledSequences)."""
    train = [i for i, s in enumerate(splits) if s == "train"]
    share = fractions[1] / (fractions[0] + fractions[1])
    # fractions (1 - share, 1): every item past the train share goes to val
    sub = assign_splits([records[i].sequence.upper() for i in train],
                        [records[i].label for i in train], (1 - share, 1.0), seed)
    out = list(splits)
    for i, s in zip(train, sub):
        out[i] = s
    return out


class LabeledSequences(SplitDataset):
    """Labelled DNA sequences, padded or cropped to ``seq_len``.

    Items: ``{"ids": LongTensor (seq_len,), "mask": BoolTensor (seq_len,), "label": int}``;
    ``class_names[label]`` is the label as written in the file (sorted; numerically if all are
    integers).

    The file's own split (CSV column ``split``, FASTA ``split=X``, the split folders of a Genomic
    Benchmarks folder) is used when present, with a validation set drawn from train when it has
    none (``fractions[1] / (fractions[0] + fractions[1])`` of each class, by ``assign_splits``);
    otherwise a deterministic stratified split by ``fractions`` (``assign_splits``). A label that appears in
    val/test but not in train is an error.

    Args:
        path: CSV/TSV, FASTA or UCI splice file, or a Genomic Benchmarks folder (see
            ``read_labeled``).
        split: "train", "val" or "test".
        seq_len: length of every item (default: the longest sequence in the file). Longer
            sequences are cropped, shorter padded with ``[PAD]``, on the tokenizer's padding side.
        format, sequence_column, label_column, split_column: see ``read_labeled``.
        fractions: train/val/test fractions when the file has no split (identical sequences are
            kept in one split).
        rc_aug: reverse-complement the sequence with probability 1/2 (seeded by seed, epoch, index).
        seed: seeds the split (together with the file) and the augmentation.
        tokenizer: a ``DNATokenizer``.
    """

    def __init__(
        self,
        path: str | Path,
        split: str = "train",
        seq_len: int | None = None,
        format: str | None = None,
        sequence_column: str | None = None,
        label_column: str = "label",
        split_column: str | None = "split",
        fractions: Sequence[float] = (0.8, 0.1, 0.1),
        rc_aug: bool = False,
        seed: int = 0,
        tokenizer: DNATokenizer | None = None,
    ):
        self.path, self.split, self.seed, self.rc_aug = (
            Path(path),
            check_split(split),
            int(seed),
            rc_aug,
        )
        self.tokenizer = tokenizer or DNATokenizer()
        records = read_labeled(path, format, sequence_column, label_column, split_column)
        if all(r.split is not None for r in records):
            splits = [r.split for r in records]
            if "val" not in splits:  # e.g. Genomic Benchmarks' official train/test split
                splits = _val_from_train(records, splits, fractions, seed)
        elif any(r.split is not None for r in records):
            r = next(r for r in records if r.split is None)
            raise DataError(f"{r.where}: no split given, but other rows of the file have one")
        else:
            splits = assign_splits(
                [r.sequence.upper() for r in records], [r.label for r in records], fractions, seed
            )
        self.class_names = class_names_for(self.path, [r.label for r in records], splits, split)
        label_id = {name: i for i, name in enumerate(self.class_names)}
        self.records = [r for r, s in zip(records, splits) if s == split]
        if not self.records:
            raise DataError(f"{self.path}: split {split!r} is empty")
        self.seq_len = int(seq_len or max(len(r.sequence) for r in records))
        self.ids, self.labels, self.n_unknown = [], [], 0
        for r in self.records:
            ids, unknown = self.tokenizer.encode(r.sequence, return_unknown=True)
            self.ids.append(ids)
            self.labels.append(label_id[r.label])
            self.n_unknown += unknown
        if self.n_unknown:
            warnings.warn(
                f"{self.path}: {self.n_unknown} character(s) other than A, C, G, T, N (IUPAC "
                f"codes or others) in split {split!r} were read as N",
                stacklevel=2,
            )

    @property
    def num_samples(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        ids = self.ids[index]
        if self.rc_aug and item_rng(self.seed, self.epoch, index).random() < 0.5:
            ids = self.tokenizer.reverse_complement_ids(ids)
        ids, mask = self.tokenizer.pad(ids, self.seq_len)
        return {"ids": ids, "mask": mask, "label": self.labels[index]}

    def iter_tokens(self, chunk_size: int | None = None) -> Iterator[tuple[int, torch.Tensor]]:
        """(item index, ids) of every sequence of the split, unpadded (``chunk_size`` is ignored:
        sequences are short)."""
        yield from enumerate(self.ids)
