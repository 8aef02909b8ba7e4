"""Audio datasets: windows of long recordings, and short labelled clips (spoken digits)."""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mamba_bio_audio.errors import DataError

from .audio import AUDIO_SUFFIXES, audio_info, file_peak, read_audio, read_window
from .base import SplitDataset, check_split, class_names_for, item_rng, window_mode
from .fasta import fraction_bounds
from .labeled import assign_splits
from .tokenizers import MuLaw, pad_or_crop


def find_audio_files(
    source: str | Path | Sequence[str | Path], recursive: bool = False
) -> list[Path]:
    """Audio files (WAV/FLAC/OGG/MP3/AIFF) of a folder, sorted, or the given list of paths."""
    if isinstance(source, (str, Path)):
        folder = Path(source)
        if not folder.is_dir():
            raise DataError(f"{folder}: folder of recordings not found")
        pattern = folder.rglob("*") if recursive else folder.iterdir()
        files = sorted(p for p in pattern if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
        if not files:
            raise DataError(f"{folder}: no audio files (expected {', '.join(AUDIO_SUFFIXES)})")
        return files
    files = [Path(p) for p in source]
    if not files:
        raise DataError("no audio files given")
    return files


@dataclass(frozen=True)
class AudioRegion:
    """Frames [start, end) of one recording, at the file's own rate."""

    path: Path
    start: int
    end: int
    rate: int
    peak: float


class RecordingWindows(SplitDataset):
    """Windows of ``seq_len`` samples from long recordings, for autoregressive audio models.

    Files are read in blocks, never whole; each is mixed to mono, resampled to ``sample_rate`` if
    needed (said once), divided by its own peak (``scale="peak"``) and quantised by ``tokenizer``.

    Items: ``{"ids": LongTensor (seq_len,), "mask": BoolTensor (seq_len,) all True,
    "waveform": FloatTensor (seq_len,)}`` (the scaled waveform before quantisation).

    Args:
        source: a folder of recordings or a list of files.
        seq_len: window length in samples (at ``sample_rate``).
        split: "train", "val" or "test".
        split_by: "time" (every recording is cut into train | val | test by ``fractions`` of its
            duration) or "file" (whole files, in sorted order, by ``fractions`` of the file count).
        sample_rate: rate of the windows (default: the first file's rate).
        mode: "random" (default for train) or "sequential" (tiles every ``stride`` samples;
            default for val/test).
        num_samples: items per epoch in random mode (default: split samples // seq_len).
        max_windows: in sequential mode, at most this many tiles, evenly spread.
        scale: "peak" (divide by each file's peak) or None.
        tokenizer: ``MuLaw`` (default, 256 levels) or ``LinearQuantizer``.
        skip_bad: skip files that cannot be used (warn and list them in ``skipped``).
    """

    def __init__(
        self,
        source,
        seq_len: int,
        split: str = "train",
        split_by: str = "time",
        fractions: Sequence[float] = (0.8, 0.1, 0.1),
        sample_rate: int | None = None,
        mode: str | None = None,
        num_samples: int | None = None,
        stride: int | None = None,
        max_windows: int | None = None,
        scale: str | None = "peak",
        seed: int = 0,
        tokenizer=None,
        skip_bad: bool = False,
    ):
        check_split(split)
        if split_by not in ("time", "file"):
            raise ValueError(f"split_by must be 'time' or 'file', got {split_by!r}")
        if scale not in ("peak", None):
            raise ValueError(f"scale must be 'peak' or None, got {scale!r}")
        self.seq_len, self.split, self.seed = int(seq_len), split, int(seed)
        self.tokenizer = tokenizer or MuLaw()
        self.scale = scale
        self.mode = window_mode(mode, split)
        files = find_audio_files(source)
        if split_by == "file":
            a, b = fraction_bounds(len(files), split, fractions)
            if a == b:
                raise DataError(
                    f"{source}: split {split!r} gets no file out of {len(files)} when "
                    f"splitting by file with fractions {tuple(fractions)}; use split_by='time'"
                )
            files = files[a:b]
        self.skipped: list[str] = []
        regions = []
        for path in files:
            try:
                info = audio_info(path)
                peak = file_peak(path) if scale == "peak" else 1.0
            except DataError as e:
                if not skip_bad:
                    raise
                self.skipped.append(str(e))
                continue
            self.sample_rate = sample_rate = sample_rate or info.samplerate
            a, b = (
                (0, info.frames)
                if split_by == "file"
                else fraction_bounds(info.frames, split, fractions)
            )
            regions.append(AudioRegion(path, a, b, info.samplerate, peak))
        if self.skipped:
            warnings.warn(
                f"{source}: skipped {len(self.skipped)} of {len(files)} recordings that cannot "
                f"be used; first: {self.skipped[0]}",
                stacklevel=2,
            )
        if not regions:
            raise DataError(f"{source}: no usable recordings")
        self.sample_rate = sample_rate
        self.regions = [r for r in regions if r.end - r.start >= self._src_len(r)]
        short = [r for r in regions if r not in self.regions]
        if not self.regions:
            r = short[0]
            raise DataError(
                f"{r.path}: the recording's {split} part is {(r.end - r.start) / r.rate:.2f} s "
                f"({r.end - r.start} samples at {r.rate} Hz), shorter than the window of "
                f"{self.seq_len} samples at {self.sample_rate} Hz, as is every other recording"
            )
        if short:
            warnings.warn(
                f"skipping {len(short)} recording(s) whose {split} part is shorter than the window "
                f"of {self.seq_len} samples (e.g. {short[0].path})",
                stacklevel=2,
            )
        self._cum = np.cumsum([r.end - r.start - self._src_len(r) + 1 for r in self.regions])
        if self.mode == "random":
            total = sum(round((r.end - r.start) * self.sample_rate / r.rate) for r in self.regions)
            self.num_samples = num_samples or max(1, total // self.seq_len)
        else:
            self.tiles = self._tiles(stride or self.seq_len, max_windows)
            self.num_samples = len(self.tiles)

    def _src_len(self, r: AudioRegion) -> int:
        """Frames of the file that one window covers."""
        return math.ceil(self.seq_len * r.rate / self.sample_rate)

    def _tiles(self, stride: int, max_windows: int | None) -> list[tuple[int, int]]:
        out = []
        for k, r in enumerate(self.regions):
            step = max(1, round(stride * r.rate / self.sample_rate))
            out += [(k, s) for s in range(r.start, r.end - self._src_len(r) + 1, step)]
        if max_windows is not None and len(out) > max_windows:
            out = [out[i] for i in np.linspace(0, len(out) - 1, max_windows).round().astype(int)]
        return out

    def window(self, index: int) -> tuple[Path, int, int]:
        """(file, first frame, frame after the last) of item ``index``, in the file's frames."""
        k, start = self._locate(index)
        r = self.regions[k]
        return r.path, start, start + self._src_len(r)

    def _locate(self, index: int) -> tuple[int, int]:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} windows")
        if self.mode == "sequential":
            return self.tiles[index]
        pos = int(item_rng(self.seed, self.epoch, index).integers(self._cum[-1]))
        k = int(np.searchsorted(self._cum, pos, side="right"))
        return k, self.regions[k].start + pos - (int(self._cum[k - 1]) if k else 0)

    def _read(self, k: int, start: int, length: int) -> torch.Tensor:
        r = self.regions[k]
        return read_window(r.path, start, length, r.rate, self.sample_rate) / r.peak

    def __getitem__(self, index: int) -> dict:
        k, start = self._locate(index)
        wave = self._read(k, start, self.seq_len)
        return {
            "ids": self.tokenizer.encode(wave),
            "mask": torch.ones(self.seq_len, dtype=torch.bool),
            "waveform": wave,
        }

    def iter_tokens(self, chunk_size: int = 1 << 16) -> Iterator[tuple[int, torch.Tensor]]:
        """(recording index, ids) over each recording's part of the split, ``chunk_size`` samples
        at a time; chunks with the same index follow on from each other."""
        for k, r in enumerate(self.regions):
            n = round((r.end - r.start) * self.sample_rate / r.rate)
            for offset in range(0, n, chunk_size):
                length = min(chunk_size, n - offset)
                start = r.start + round(offset * r.rate / self.sample_rate)
                length = min(length, round((r.end - start) * self.sample_rate / r.rate))
                if length > 0:
                    yield k, self.tokenizer.encode(self._read(k, start, length))


def fsdd_split(path: Path) -> str:
    """Split of a Free Spoken Digit Dataset file ``{digit}_{speaker}_{index}``: the official test
    split is indices 0-4; indices 5-9 are kept for validation here, 10-49 are train."""
    match = re.fullmatch(r".+_(\d+)", path.stem)
    if not match:
        raise DataError(
            f"{path}: file name does not end in _<index> as FSDD's {{digit}}_{{speaker}}_{{index}}"
        )
    index = int(match.group(1))
    return "test" if index < 5 else "val" if index < 10 else "train"


class LabeledClips(SplitDataset):
    """Short labelled clips (e.g. spoken digits), padded or cropped to ``seq_len`` samples.

    Clips are read at construction and kept in memory (meant for clips of seconds). Each is mixed
    to mono, resampled to ``sample_rate`` if needed (said once), divided by its peak
    (``scale="peak"``) and quantised by ``tokenizer``; padding uses ``tokenizer.pad_id`` (silence).

    Items: ``{"ids": LongTensor (seq_len,), "mask": BoolTensor (seq_len,), "label": int,
    "waveform": FloatTensor (seq_len,)}``.

    With a feature front-end as ``tokenizer`` (``features.LogMel``, which has ``feature_dim``),
    each clip's frames are computed once at construction, ``seq_len`` counts frames, and items
    are ``{"ids": FloatTensor (seq_len, feature_dim), "mask": BoolTensor (seq_len,) True on the
    clip's frames, "label": int, "waveform": FloatTensor (seq_len * hop_length,)}``.

    Args:
        folder: folder of clips (searched recursively).
        split: "train", "val" or "test".
        seq_len: samples (frames with a feature front-end) per item (default: the longest clip
            of the split).
        sample_rate: rate of the items (default: the first clip's rate).
        label_from: "name" (``label_pattern``'s first group on the file stem; default: the text
            before the first "_", the digit of FSDD's ``{digit}_{speaker}_{index}``) or "folder"
            (the clip's parent folder).
        split_by: "hash" (deterministic stratified split by ``fractions``, see ``assign_splits``)
            or "fsdd" (``fsdd_split``: official test = indices 0-4, val = 5-9, train = the rest).
        pad_side: "right" (crop keeps the start) or "left".
        skip_bad: skip clips that cannot be used (warn and list them in ``skipped``).
    """

    def __init__(
        self,
        folder: str | Path,
        split: str = "train",
        seq_len: int | None = None,
        sample_rate: int | None = None,
        label_from: str = "name",
        label_pattern: str = r"^([^_]+)_",
        split_by: str = "hash",
        fractions: Sequence[float] = (0.8, 0.1, 0.1),
        scale: str | None = "peak",
        pad_side: str = "right",
        seed: int = 0,
        tokenizer=None,
        skip_bad: bool = False,
    ):
        check_split(split)
        if label_from not in ("name", "folder"):
            raise ValueError(f"label_from must be 'name' or 'folder', got {label_from!r}")
        if split_by not in ("hash", "fsdd"):
            raise ValueError(f"split_by must be 'hash' or 'fsdd', got {split_by!r}")
        self.folder, self.split, self.seed = Path(folder), split, int(seed)
        self.tokenizer, self.pad_side, self.scale = tokenizer or MuLaw(), pad_side, scale
        files = find_audio_files(folder, recursive=True)
        labels = [self._label(p, label_from, label_pattern) for p in files]
        if split_by == "fsdd":
            splits = [fsdd_split(p) for p in files]
        else:
            splits = assign_splits(
                [str(p.relative_to(self.folder)) for p in files], labels, fractions, seed
            )
        self.class_names = class_names_for(self.folder, labels, splits, split)
        label_id = {name: i for i, name in enumerate(self.class_names)}
        self.files, self.labels, self.waves, self.skipped = [], [], [], []
        for path, label, s in zip(files, labels, splits):
            if s != split:
                continue
            try:
                wave, rate = read_audio(path, sample_rate)
                peak = float(wave.abs().max())
                if peak == 0.0:
                    raise DataError(f"{path}: the clip is silent (every sample is 0)")
            except DataError as e:
                if not skip_bad:
                    raise
                self.skipped.append(str(e))
                continue
            sample_rate = sample_rate or rate
            self.files.append(path)
            self.labels.append(label_id[label])
            self.waves.append(wave / peak if scale == "peak" else wave)
        if self.skipped:
            warnings.warn(
                f"{folder}: skipped {len(self.skipped)} clips of split {split!r} that cannot be "
                f"used; first: {self.skipped[0]}",
                stacklevel=2,
            )
        if not self.waves:
            raise DataError(f"{folder}: split {split!r} has no usable clips")
        self.sample_rate = sample_rate
        # a feature front-end (log-mel): frames computed once; seq_len then counts frames
        self.features = (
            [self.tokenizer.encode(w) for w in self.waves]
            if getattr(self.tokenizer, "feature_dim", 0)
            else None
        )
        self.seq_len = int(seq_len or max(len(x) for x in self.features or self.waves))

    def _label(self, path: Path, label_from: str, pattern: str) -> str:
        if label_from == "folder":
            return path.parent.name
        match = re.search(pattern, path.stem)
        if not match:
            raise DataError(
                f"{path}: cannot read a label from the file name with pattern {pattern!r}"
            )
        return match.group(1)

    @property
    def num_samples(self) -> int:
        return len(self.waves)

    def __getitem__(self, index: int) -> dict:
        wave = self.waves[index]
        encoded = self.tokenizer.encode(wave) if self.features is None else self.features[index]
        ids, mask = pad_or_crop(encoded, self.seq_len, self.tokenizer.pad_id, self.pad_side)
        n_samples = self.seq_len * getattr(self.tokenizer, "hop_length", 1)
        wave, _ = pad_or_crop(wave, n_samples, 0.0, self.pad_side)
        return {"ids": ids, "mask": mask, "label": self.labels[index], "waveform": wave}

    def iter_tokens(self, chunk_size: int | None = None) -> Iterator[tuple[int, torch.Tensor]]:
        """(clip index, ids) of every clip of the split, unpadded (frames with a front-end)."""
        for i, wave in enumerate(self.waves):
            yield i, self.tokenizer.encode(wave) if self.features is None else self.features[i]
