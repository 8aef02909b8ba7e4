"""Random access into FASTA files (plain or BGZF) through pyfaidx, and reading whole records.

``FastaFile`` opens a FASTA once per process, builds its ``.fai`` (and ``.gzi`` for BGZF) at first
use -- next to the file, or in a cache folder when that folder is not writable -- and fetches any
slice without reading whole records. The windows datasets over it are in genome.py.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import sys
import tempfile
from pathlib import Path

import pyfaidx

from mamba_bio_audio.errors import DataError
from mamba_bio_audio.files import write_atomic


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
    def copy(tmp: Path) -> None:
        with gzip.open(path, "rb") as src, bgzf.BgzfWriter(str(tmp), "wb") as dst, tqdm(
                total=stat.st_size, unit="B", unit_scale=True, desc="gzip -> BGZF") as bar:
            while chunk := src.read(1 << 22):
                dst.write(chunk)
                bar.update(src.fileobj.tell() - bar.n)

    try:
        write_atomic(target, copy)
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: cannot read the compressed file ({err})") from None
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


# FastaFile checks the first CHECKED_BASES letters of its first CHECKED_RECORDS records
CHECKED_RECORDS, CHECKED_BASES = 100, 10_000


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
        for name in self.names[:CHECKED_RECORDS]:  # a protein FASTA is refused before training
            check_nucleotides(self.path, name,
                              self.fetch(name, 0, min(CHECKED_BASES, self.lengths[name])))

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
