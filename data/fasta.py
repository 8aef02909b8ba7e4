"""Random access into FASTA files (plain or BGZF) through pyfaidx, and genome-window datasets.

``FastaFile`` opens a FASTA once per process, builds its ``.fai`` (and ``.gzi`` for BGZF) at first
use -- next to the file, or in a cache folder when that folder is not writable -- and fetches any
slice without reading whole records. ``GenomeWindows`` is the pretraining dataset: windows of
``seq_len`` bases from the regions of one split (by record name, by fraction of each record, or
from a BED file).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyfaidx
import torch

from mamba_bio_audio.errors import DataError

from .base import SPLITS, SplitDataset, check_split, item_rng, window_mode
from .tokenizers import DNATokenizer

FASTA_SUFFIXES = (".fa", ".fasta", ".fna", ".fas")


def cache_dir() -> Path:
    """Folder for indexes of read-only FASTA files: ``$MAMBA_BIO_AUDIO_CACHE`` or ~/.cache/..."""
    root = os.environ.get("MAMBA_BIO_AUDIO_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mamba_bio_audio"


def fasta_stem(path: str | Path) -> str:
    """File name without ``.gz`` and the FASTA suffix: ``e_coli.fa.gz`` -> ``e_coli``."""
    name = Path(path).name
    name = name.removesuffix(".gz")
    for suffix in FASTA_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def check_fasta_start(path: Path) -> bool:
    """Raise DataError unless ``path`` exists and starts with a '>' header; return True if BGZF."""
    if not path.exists():
        raise DataError(f"{path}: FASTA file not found")
    if path.is_dir():
        raise DataError(f"{path}: expected a FASTA file, found a folder")
    with open(path, "rb") as f:
        magic = f.read(4)
    compressed = magic[:2] == b"\x1f\x8b"
    try:
        opener = gzip.open if compressed else open
        with opener(path, "rb") as f:
            head = f.read(4096)
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read the compressed file ({e})") from e
    text = head.lstrip()
    if not text:
        raise DataError(
            f"{path}: the file is empty; expected FASTA ('>name' lines followed by sequence)"
        )
    if not text.startswith(b">"):
        first = text.split(b"\n", 1)[0][:60].decode("utf-8", "replace")
        raise DataError(
            f"{path}: not a FASTA file: line 1 should start with '>' (a record header), "
            f"found {first!r}"
        )
    return compressed


def is_bgzf(path: Path) -> bool:
    """Whether a gzip file is BGZF (blocked gzip: an extra field 'BC' in its first header)."""
    with open(path, "rb") as f:
        head = f.read(18)
    return len(head) == 18 and head[3] & 4 != 0 and head[12:14] == b"BC"


def check_bgzf_end(path: Path) -> None:
    """DataError unless a BGZF file ends with the BGZF end-of-file block (else it is cut short,
    e.g. an interrupted download, and would silently lose the records after the cut)."""
    from Bio.bgzf import _bgzf_eof

    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - len(_bgzf_eof)))
        if f.read() != _bgzf_eof:
            raise DataError(f"{path}: truncated BGZF file (no end-of-file block); download or "
                            "compress it again")


def bgzf_copy(path: Path) -> Path:
    """A BGZF copy of a plain-gzip FASTA (UCSC's hg38.fa.gz, NCBI downloads), which pyfaidx
    cannot seek in: written once into ``cache_dir()/bgzf`` (a progress bar and a message say so),
    found there again by the file's path, size and modification time."""
    from Bio import bgzf
    from tqdm.auto import tqdm

    stat = path.stat()
    key = hashlib.sha1(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
    target = cache_dir() / "bgzf" / f"{key[:16]}_{path.name}"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tqdm.write(f"{path}: plain gzip, which allows no random access; writing a BGZF copy once to "
               f"{target} (set MAMBA_BIO_AUDIO_CACHE to choose the folder)", file=sys.stderr)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        with gzip.open(path, "rb") as src, bgzf.BgzfWriter(str(tmp), "wb") as dst, tqdm(
                total=stat.st_size, unit="B", unit_scale=True, desc="gzip -> BGZF") as bar:
            while chunk := src.read(1 << 22):
                dst.write(chunk)
                bar.update(src.fileobj.tell() - bar.n)
        os.replace(tmp, target)
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: cannot read the compressed file ({err})") from None
    finally:
        tmp.unlink(missing_ok=True)
    return target


# IUPAC nucleotide codes, gaps and stops; a record with more than 1 % other letters is not DNA
NUCLEOTIDE_CODES = b"ACGTUNRYKMSWBDHVacgtunrykmswbdhv-.*"


def read_records(path: str | Path):
    """(name, sequence) of every record of a FASTA file (plain or gzip), read in one pass
    (Biopython), each checked to be nucleotides; DataError naming the file otherwise."""
    from Bio.SeqIO.FastaIO import SimpleFastaParser

    path = Path(path)
    check_fasta_start(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="ascii") as handle:
            for title, seq in SimpleFastaParser(handle):
                name = title.split()[0] if title.split() else "(no name)"
                check_nucleotides(path, name, seq)
                yield name, seq
    except (UnicodeDecodeError, EOFError, gzip.BadGzipFile) as err:
        raise DataError(f"{path}: not a text FASTA file ({err})") from None


def check_nucleotides(path: Path, name: str, seq: str) -> None:
    """DataError for a record that is not nucleotides (e.g. a protein FASTA)."""
    other = seq.encode("ascii").translate(None, NUCLEOTIDE_CODES)
    if len(other) > 0.01 * len(seq):
        letters = "".join(sorted(set(other.decode())))[:12]
        raise DataError(f"{path}: record {name!r}: {len(other):,} of {len(seq):,} letters are not "
                        f"nucleotide codes ({letters!r}); is it a protein FASTA? The model reads DNA")


def _is_writable(folder: Path) -> bool:
    """Whether a file can be created in ``folder`` (tried, since permissions alone can mislead)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


class FastaFile:
    """A FASTA file (plain or BGZF) opened with pyfaidx, index built once, reopened per process.

    Attributes:
        path: the file.
        names: record names (first word of each header), in file order.
        lengths: dict name -> length in bases.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        compressed = check_fasta_start(self.path)
        if compressed and not is_bgzf(self.path):
            self.path = bgzf_copy(self.path)
        elif compressed:
            check_bgzf_end(self.path)
        self._index_kwargs = self._index_location(compressed)
        self._fasta = None
        self._pid = None
        fa = self._open()
        self.names = list(fa.keys())
        self.lengths = {name: len(fa.faidx.index[name]) for name in self.names}
        if not self.names or sum(self.lengths.values()) == 0:
            raise DataError(
                f"{self.path}: FASTA file has no sequence (no records or all records empty)"
            )

    def _index_location(self, compressed: bool) -> dict:
        """Where the .fai/.gzi live; (re)build them there if they are missing or stale.

        Next to the FASTA when an up-to-date index is there or the folder is writable, otherwise
        in ``cache_dir()``. Indexes are written under temporary names and renamed, so that
        concurrent ranks never see half an index.
        """

        def paths(folder: Path, base: str) -> dict:
            kwargs = {"indexname": str(folder / (base + ".fai"))}
            if compressed:
                kwargs["gzi_indexname"] = str(folder / (base + ".gzi"))
            return kwargs

        def fresh(kwargs: dict) -> bool:
            mtime = self.path.stat().st_mtime
            return all(
                Path(p).exists() and Path(p).stat().st_mtime >= mtime for p in kwargs.values()
            )

        kwargs = paths(self.path.parent, self.path.name)
        if not fresh(kwargs) and not _is_writable(self.path.parent):
            key = hashlib.sha1(str(self.path.resolve()).encode()).hexdigest()[:16]
            folder = cache_dir() / "fasta_index"
            folder.mkdir(parents=True, exist_ok=True)
            kwargs = paths(folder, f"{key}_{self.path.name}")
        if not fresh(kwargs):
            tmp = {k: f"{v}.tmp{os.getpid()}" for k, v in kwargs.items()}
            try:
                self._pyfaidx(tmp).close()
                for k in kwargs:
                    os.replace(tmp[k], kwargs[k])
            finally:
                for p in tmp.values():
                    Path(p).unlink(missing_ok=True)
        return kwargs

    def _pyfaidx(self, index_kwargs: dict) -> pyfaidx.Fasta:
        try:
            return pyfaidx.Fasta(
                str(self.path),
                as_raw=True,
                sequence_always_upper=False,
                rebuild=False,
                **index_kwargs,
            )
        except pyfaidx.FastaIndexingError as e:
            raise DataError(f"{self.path}: malformed FASTA ({e})") from e
        except ValueError as e:
            raise DataError(f"{self.path}: malformed FASTA ({e})") from e

    def _open(self) -> pyfaidx.Fasta:
        if self._fasta is None or self._pid != os.getpid():
            self._fasta = self._pyfaidx(self._index_kwargs)
            self._pid = os.getpid()
        return self._fasta

    def fetch(self, name: str, start: int, end: int) -> str:
        """Bases [start, end) (0-based) of record ``name``, as in the file (case kept)."""
        if name not in self.lengths:
            raise DataError(f"{self.path}: no record named {name!r}; records are {self.names[:10]}")
        if not 0 <= start <= end <= self.lengths[name]:
            raise DataError(
                f"{self.path}: interval {name}:{start}-{end} is outside the record "
                f"(length {self.lengths[name]})"
            )
        try:
            return self._open()[name][start:end]
        except ValueError:
            # pyfaidx cannot seek to a position that starts a BGZF block of exactly 64 KiB
            # ("Require 0 <= within_block_offset < 2**16"); read one base earlier instead.
            if start == 0:
                raise
            return self._open()[name][start - 1:end][1:]

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_fasta"] = None
        return state

    def __repr__(self) -> str:
        return f"FastaFile({str(self.path)!r}, {len(self.names)} records)"


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

    Random windows are drawn uniformly over all valid start positions; windows with more than
    ``max_n_frac`` N (or other non-ACGT characters) are redrawn. Regions shorter than ``seq_len``
    are skipped with a warning; if none is long enough, DataError.
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
        counts = np.array([len(r) - self.seq_len + 1 for r in self.regions], dtype=np.int64)
        self._cum = np.cumsum(counts)
        self.total_bases = int(sum(len(r) for r in self.regions))

    def _too_many_n(self, ids: torch.Tensor) -> bool:
        return bool((ids == self.tokenizer.n_id).sum() > self.max_n_frac * ids.numel())

    def random_window(self, rng: np.random.Generator) -> tuple[Region, torch.Tensor]:
        """A random window (region of the window, ids) with at most ``max_n_frac`` N."""
        for _ in range(self.max_tries):
            pos = int(rng.integers(self._cum[-1]))
            k = int(np.searchsorted(self._cum, pos, side="right"))
            offset = pos - (int(self._cum[k - 1]) if k else 0)
            region = self.regions[k]
            start = region.start + offset
            ids = self.tokenizer.encode(self.fasta.fetch(region.name, start, start + self.seq_len))
            if not self._too_many_n(ids):
                return Region(region.name, start, start + self.seq_len), ids
        raise DataError(
            f"{self.fasta.path}: {self.max_tries} random windows of {self.seq_len} bp all had more "
            f"than {self.max_n_frac:.0%} N; is the sequence (almost) all N?"
        )

    def tiles(self, stride: int | None = None, max_windows: int | None = None) -> list[Region]:
        """Windows from the start of each region every ``stride`` bases (default: ``seq_len``),
        skipping those with too many N; at most ``max_windows``, spread evenly."""
        stride = stride or self.seq_len
        out = []
        for region in self.regions:
            for start in range(region.start, region.end - self.seq_len + 1, stride):
                out.append(Region(region.name, start, start + self.seq_len))
        if max_windows is not None and len(out) > max_windows:
            keep = np.linspace(0, len(out) - 1, max_windows).round().astype(int)
            out = [out[i] for i in keep]
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
