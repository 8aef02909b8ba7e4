"""The audio front-end: how a recording becomes model inputs, decided in one place.

    read      soundfile, only the frames asked for (the header is read once per file)
    mono      the mean of the channels
    resample  torchaudio.functional.resample to ``sample_rate``
    normalise divide by the file's peak: the largest absolute sample of the whole file at its own
              rate, measured once per file (``scale="peak"``), or nothing (``scale=None``)
    encode    the tokenizer: mu-law ids (``MuLaw``, which also clips to [-1, 1], the only clamp)
              or log-mel frames (``features.LogMel``)

Training reads audio through it (``RecordingWindows`` for LMs, ``LabeledClips`` for classifiers,
``clips.WholeClips`` for LMs of whole clips), and so do ``predict``, ``generate``, ``finetune``
and ``evaluate-audio``, which build it from the settings saved with
the checkpoint (the tokenizer in tokenizer.json, the sample rate in data_config.json). So a clip
that ``predict`` reads gets the model inputs its classifier was trained on, and a ``generate``
prompt the ids its LM was fine-tuned on, bit for bit.

A classifier's input of a clip (``clip_inputs``) is the first (``pad_side="right"``) or last
``seq_len`` positions of the whole clip's encoding (log-mel frames are normalised over the whole
clip), padded with the tokenizer's ``pad_id``; ``predict`` tiles the encoding of a longer file,
so its first window is what training saw of the same file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from .audio import audio_info, file_peak, note_resampling, read_frames, resample
from .tokenizers import pad_or_crop

SCALES = ("peak", None)
RESAMPLE_MARGIN = 64  # source frames read on each side of a window, so the filter sees context


@dataclass(frozen=True)
class AudioSource:
    """One recording as the front-end knows it after reading its header (and peak) once."""

    path: Path
    frames: int  # at the file's own rate
    rate: int
    peak: float  # what its samples are divided by (1.0 with scale=None)


def open_source(path: str | Path, scale: str | None = "peak") -> AudioSource:
    """The header (and, with scale="peak", the peak) of a file; DataError if it cannot be used
    (missing, empty, not audio, truncated, silent)."""
    if scale not in SCALES:
        raise ValueError(f"scale must be 'peak' or None, got {scale!r}")
    info = audio_info(path)
    peak = file_peak(path) if scale == "peak" else 1.0
    return AudioSource(Path(path), int(info.frames), int(info.samplerate), peak)


class AudioFrontEnd:
    """read -> mono -> resample -> normalise -> encode, with one set of settings.

    Args:
        tokenizer: ``MuLaw`` / ``LinearQuantizer`` (ids) or ``LogMel`` (float frames).
        sample_rate: the rate the model reads (Hz).
        scale: "peak" (divide by the file's peak) or None.
    """

    def __init__(self, tokenizer, sample_rate: int, scale: str | None = "peak"):
        self.tokenizer = tokenizer
        self.sample_rate, self.scale = int(sample_rate), scale
        own_rate = getattr(self.tokenizer, "sample_rate", self.sample_rate)
        if own_rate != self.sample_rate:
            raise ValueError(f"the tokenizer computes features at {own_rate} Hz, but the "
                             f"front-end reads audio at {self.sample_rate} Hz")

    @property
    def hop_length(self) -> int:
        """Samples per model position: 1 for sample ids, the frame hop for log-mel."""
        return getattr(self.tokenizer, "hop_length", 1)

    @property
    def unit(self) -> str:
        return "frames" if self.hop_length > 1 else "samples"

    def open(self, path: str | Path) -> AudioSource:
        return open_source(path, self.scale)

    def length(self, src: AudioSource) -> int:
        """Samples of the whole file at ``sample_rate``."""
        return round(src.frames * self.sample_rate / src.rate)

    def source_frames(self, src: AudioSource, length: int) -> int:
        """Frames of the file that ``length`` samples at ``sample_rate`` cover."""
        return math.ceil(length * src.rate / self.sample_rate)

    def read(self, src: AudioSource, start: int = 0, length: int | None = None) -> torch.Tensor:
        """Normalised mono samples at ``sample_rate``: the whole file (``length=None``), or
        ``length`` samples from frame ``start`` of the file (a window: when resampling,
        ``RESAMPLE_MARGIN`` extra frames are read on each side where they exist)."""
        if length is None:
            wave = read_frames(src.path, 0, src.frames)
            if src.rate != self.sample_rate:
                note_resampling(src.path, src.rate, self.sample_rate)
                wave = resample(wave, src.rate, self.sample_rate)
            return wave / src.peak
        if src.rate == self.sample_rate:
            return read_frames(src.path, start, length) / src.peak
        lo = max(0, start - RESAMPLE_MARGIN)
        hi = min(src.frames, start + self.source_frames(src, length) + RESAMPLE_MARGIN)
        note_resampling(src.path, src.rate, self.sample_rate)
        wave = resample(read_frames(src.path, lo, hi - lo), src.rate, self.sample_rate)
        skip = round((start - lo) * self.sample_rate / src.rate)
        wave = wave[skip:skip + length]
        if len(wave) < length:
            wave = torch.cat([wave, wave.new_zeros(length - len(wave))])
        return wave / src.peak

    def normalise(self, wave: torch.Tensor) -> torch.Tensor:
        """Samples already in memory (a generated clip, noise) scaled as ``read`` scales a file:
        divided by their own peak with ``scale="peak"`` (silence is left as it is), unchanged
        with ``scale=None``."""
        wave = torch.as_tensor(wave, dtype=torch.float32)
        peak = float(wave.abs().max()) if self.scale == "peak" and wave.numel() else 0.0
        return wave / peak if peak > 0 else wave

    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        """Ids (T,) or frames (n_frames, n_mels) of normalised samples."""
        return self.tokenizer.encode(wave)

    def clip_inputs(self, encoded: torch.Tensor, seq_len: int, pad_side: str = "right"):
        """(inputs, mask) of a classifier from a clip's encoding: its first
        (``pad_side="right"``) or last ``seq_len`` positions, padded with ``pad_id``."""
        return pad_or_crop(encoded, seq_len, self.tokenizer.pad_id, pad_side)

    def __repr__(self) -> str:
        return (f"AudioFrontEnd({self.tokenizer!r}, sample_rate={self.sample_rate}, "
                f"scale={self.scale!r})")
