"""Audio datasets: windows of long recordings, and short labelled clips (spoken digits)."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from mamba_bio_audio.errors import ConfigError, DataError

from .audio import AUDIO_SUFFIXES
from .base import (SplitDataset, WindowEngine, assign_splits, check_split, class_names_for,
                   fraction_bounds, item_rng, window_mode)
from .frontend import AudioFrontEnd, AudioSource, open_source
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

    source: AudioSource
    start: int
    end: int

    @property
    def path(self) -> Path:
        return self.source.path

    @property
    def rate(self) -> int:
        return self.source.rate


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
        self.seq_len, self.split, self.seed = int(seq_len), split, int(seed)
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
        sources, self.skipped = _open_all(files, scale, skip_bad)
        if self.skipped:
            warnings.warn(
                f"{source}: skipped {len(self.skipped)} of {len(files)} recordings that cannot "
                f"be used; first: {self.skipped[0]}",
                stacklevel=2,
            )
        if not sources:
            raise DataError(f"{source}: no usable recordings")
        self.frontend = AudioFrontEnd(MuLaw() if tokenizer is None else tokenizer,
                                      sample_rate or sources[0].rate, scale)
        self.tokenizer, self.sample_rate = self.frontend.tokenizer, self.frontend.sample_rate
        regions = [AudioRegion(src, *((0, src.frames) if split_by == "file"
                                      else fraction_bounds(src.frames, split, fractions)))
                   for src in sources]
        self.regions = self._long_enough(regions)
        self._place_windows()
        if self.mode == "random":
            total = sum(round((r.end - r.start) * self.sample_rate / r.rate) for r in self.regions)
            self.num_samples = num_samples or max(1, total // self.seq_len)
        else:
            steps = [max(1, round((stride or self.seq_len) * r.rate / self.sample_rate))
                     for r in self.regions]
            self.tiles = self.windows.tiles(steps, max_windows)
            self.num_samples = len(self.tiles)

    def _long_enough(self, regions: list[AudioRegion]) -> list[AudioRegion]:
        """The regions that hold one window (a warning names the others; DataError if none)."""
        kept = [r for r in regions if r.end - r.start >= self._src_len(r)]
        short = [r for r in regions if r not in kept]
        if not kept:
            r = short[0]
            raise DataError(
                f"{r.path}: the recording's {self.split} part is {(r.end - r.start) / r.rate:.2f} s "
                f"({r.end - r.start} samples at {r.rate} Hz), shorter than the window of "
                f"{self.seq_len} samples at {self.sample_rate} Hz, as is every other recording"
            )
        if short:
            warnings.warn(
                f"skipping {len(short)} recording(s) whose {self.split} part is shorter than the "
                f"window of {self.seq_len} samples (e.g. {short[0].path})",
                stacklevel=3,
            )
        return kept

    def _place_windows(self) -> None:
        self.windows = WindowEngine([(r.start, r.end) for r in self.regions],
                                    [self._src_len(r) for r in self.regions])

    def set_seq_len(self, seq_len: int) -> None:
        """Random windows of ``seq_len`` samples from now on (<= the length it was built with,
        over the same recordings): the trainer's sequence-length warm-up."""
        if self.mode != "random":
            raise ValueError("set_seq_len is for random windows (training)")
        longest = self.__dict__.setdefault("longest", self.seq_len)
        if seq_len > longest:
            raise ConfigError(f"train.seq_len_stages: {seq_len} is longer than data.seq_len="
                              f"{longest}, the longest window")
        self.seq_len = int(seq_len)
        self._place_windows()

    def _src_len(self, r: AudioRegion) -> int:
        """Frames of the file that one window covers."""
        return self.frontend.source_frames(r.source, self.seq_len)

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
        return self.windows.random(item_rng(self.seed, self.epoch, index))

    def __getitem__(self, index: int) -> dict:
        k, start = self._locate(index)
        wave = self.frontend.read(self.regions[k].source, start, self.seq_len)
        return {
            "ids": self.frontend.encode(wave),
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
                    yield k, self.frontend.encode(self.frontend.read(r.source, start, length))


def _open_all(files, scale, skip_bad: bool) -> tuple[list[AudioSource], list[str]]:
    """(AudioSource of every usable file, the messages of the files skipped with ``skip_bad``;
    without it, the first DataError is raised)."""
    sources, skipped = [], []
    for path in files:
        try:
            sources.append(open_source(path, scale))
        except DataError as e:
            if not skip_bad:
                raise
            skipped.append(str(e))
    return sources, skipped


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
    """Short labelled clips (e.g. spoken digits), one item per clip.

    Clips are read at construction and kept in memory (meant for clips of seconds), through the
    audio front-end (``frontend.AudioFrontEnd``: mono, resampled to ``sample_rate`` if needed,
    divided by the file's peak with ``scale="peak"``). An item holds the model inputs of the clip
    (``AudioFrontEnd.clip_inputs``): the first ``seq_len`` positions (the last with
    ``pad_side="left"``) of the clip encoded by ``tokenizer``, padded with ``tokenizer.pad_id``.

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
        self.pad_side, self.scale = pad_side, scale
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
        mine = [(p, lab) for p, lab, s in zip(files, labels, splits) if s == split]
        sources, self.skipped = _open_all([p for p, _ in mine], scale, skip_bad)
        if self.skipped:
            warnings.warn(
                f"{folder}: skipped {len(self.skipped)} clips of split {split!r} that cannot be "
                f"used; first: {self.skipped[0]}",
                stacklevel=2,
            )
        if not sources:
            raise DataError(f"{folder}: split {split!r} has no usable clips")
        label_of = dict(mine)
        self.frontend = AudioFrontEnd(MuLaw() if tokenizer is None else tokenizer,
                                      sample_rate or sources[0].rate, scale)
        self.tokenizer, self.sample_rate = self.frontend.tokenizer, self.frontend.sample_rate
        self.files = [src.path for src in sources]
        self.labels = [label_id[label_of[src.path]] for src in sources]
        self.waves = [self.frontend.read(src) for src in sources]
        # a feature front-end (log-mel): each clip's frames computed once; seq_len counts frames
        self.features = ([self.frontend.encode(w) for w in self.waves]
                         if self.frontend.hop_length > 1 else None)
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
        encoded = self.frontend.encode(wave) if self.features is None else self.features[index]
        ids, mask = self.frontend.clip_inputs(encoded, self.seq_len, self.pad_side)
        n_samples = self.seq_len * self.frontend.hop_length
        wave, _ = pad_or_crop(wave, n_samples, 0.0, self.pad_side)
        return {"ids": ids, "mask": mask, "label": self.labels[index], "waveform": wave}

    def iter_tokens(self, chunk_size: int | None = None) -> Iterator[tuple[int, torch.Tensor]]:
        """(clip index, ids) of every clip of the split, unpadded (frames with a front-end)."""
        for i, wave in enumerate(self.waves):
            yield i, self.frontend.encode(wave) if self.features is None else self.features[i]
