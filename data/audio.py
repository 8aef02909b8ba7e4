"""Audio I/O with soundfile: read (in blocks, or only the frames asked for), mix to mono,
resample, write. ``frontend.AudioFrontEnd`` puts these together into model inputs.

All readers return float32 mono waveforms, shape (T,), as the file holds them (in [-1, 1] for
PCM; resampling may overshoot it slightly: the mu-law quantiser clips). Resampling uses
``torchaudio.functional.resample``. Problems with a file raise ``DataError`` naming it.
"""

from __future__ import annotations

import functools
import struct
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from mamba_bio_audio.errors import DataError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")

_resample_notes: set = set()


def audio_info(path: str | Path) -> sf._SoundFileInfo:
    """soundfile's header info (samplerate, frames, channels).

    Raises DataError if the file is missing, empty, not audio, or a truncated WAV."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: audio file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty (0 bytes)")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise DataError(f"{path}: not a readable audio file (WAV/FLAC/OGG expected): {e}") from e
    if info.frames <= 0:
        raise DataError(f"{path}: the recording has no samples")
    if info.format == "WAV":
        _check_wav_complete(path)
    return info


def _check_wav_complete(path: Path) -> None:
    """DataError if a RIFF/WAV file is shorter than its data chunk says (libsndfile reads such a
    truncated file without complaint, so the header is checked here)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        if f.read(4) != b"RIFF":
            return
        f.seek(12)
        while True:
            header = f.read(8)
            if len(header) < 8:
                return
            chunk, length = header[:4], struct.unpack("<I", header[4:])[0]
            if chunk == b"data":
                if f.tell() + length > size:
                    raise DataError(
                        f"{path}: truncated: the WAV header promises {length} bytes of audio, "
                        f"but the file ends after {size - f.tell()}"
                    )
                return
            f.seek(length + (length & 1), 1)


def note_resampling(path: str | Path, orig_rate: int, rate: int) -> None:
    """Warn, once per (original rate, rate) pair in this process, that audio is being resampled."""
    if (orig_rate, rate) not in _resample_notes:
        _resample_notes.add((orig_rate, rate))
        warnings.warn(
            f"{path}: recorded at {orig_rate} Hz, resampling to {rate} Hz as asked "
            f"(said once for every file at {orig_rate} Hz)",
            stacklevel=3,
        )


def to_mono(block: np.ndarray) -> np.ndarray:
    """(frames, channels) or (frames,) -> (frames,) by averaging the channels."""
    return block.mean(axis=1) if block.ndim == 2 else block


def resample(waveform: torch.Tensor, orig_rate: int, rate: int) -> torch.Tensor:
    """Band-limited resampling of (..., T) from ``orig_rate`` to ``rate`` Hz (torchaudio)."""
    if orig_rate == rate:
        return waveform
    return AF.resample(waveform, int(orig_rate), int(rate))


def read_frames(path: str | Path, start: int, frames: int) -> torch.Tensor:
    """Frames [start, start + frames) of a file whose header was checked (``audio_info``), mono.

    Raises DataError when they cannot be decoded or the file ends before them (truncated).
    """
    try:
        with sf.SoundFile(str(path)) as f:
            f.seek(start)
            data = f.read(frames, dtype="float32", always_2d=True)
            promised = f.frames
    except (sf.LibsndfileError, RuntimeError) as e:
        raise DataError(
            f"{path}: cannot decode the audio ({e}); is the file truncated or damaged?"
        ) from e
    if len(data) < frames:
        raise DataError(
            f"{path}: truncated: the header promises {promised} frames, but only "
            f"{start + len(data)} could be read"
        )
    return torch.from_numpy(np.ascontiguousarray(to_mono(data)))


def read_audio(
    path: str | Path, sample_rate: int | None = None, start: int = 0, frames: int = -1
) -> tuple[torch.Tensor, int]:
    """Read frames [start, start + frames) of a file (all of it if ``frames`` is -1), as mono.

    Only the asked frames are read. With ``sample_rate``, the result is resampled to it (said once
    per original rate); ``start`` and ``frames`` count frames of the file, at its own rate.

    Returns:
        waveform FloatTensor (T,), and its sample rate.
    Raises:
        DataError: missing, empty, not audio, or truncated (fewer frames than the header promises).
    """
    info = audio_info(path)
    wave = read_frames(path, start, info.frames - start if frames < 0 else frames)
    rate = info.samplerate
    if sample_rate is not None and sample_rate != rate:
        note_resampling(path, rate, sample_rate)
        wave, rate = resample(wave, rate, sample_rate), sample_rate
    return wave, rate


def iter_blocks(path: str | Path, blocksize: int = 1 << 16) -> Iterator[torch.Tensor]:
    """Mono float blocks of up to ``blocksize`` frames, at the file's rate, never the whole file."""
    audio_info(path)
    try:
        for block in sf.blocks(str(path), blocksize=blocksize, dtype="float32", always_2d=True):
            yield torch.from_numpy(np.ascontiguousarray(to_mono(block)))
    except (sf.LibsndfileError, RuntimeError) as e:
        raise DataError(
            f"{path}: cannot decode the audio ({e}); is the file truncated or damaged?"
        ) from e


def file_peak(path: str | Path, blocksize: int = 1 << 16) -> float:
    """Largest absolute sample of a file (read in blocks, remembered while the file is unchanged);
    DataError if the file is silent or truncated."""
    info = audio_info(path)
    stat = Path(path).stat()
    return _file_peak(
        str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size, info.frames, blocksize
    )


@functools.lru_cache(maxsize=1024)
def _file_peak(path: str, mtime_ns: int, size: int, frames: int, blocksize: int) -> float:
    peak, seen = 0.0, 0
    for block in iter_blocks(path, blocksize):
        seen += len(block)
        peak = max(peak, float(block.abs().max()))
    if seen < frames:
        raise DataError(
            f"{path}: truncated: the header promises {frames} frames, but only {seen} could be read"
        )
    if peak == 0.0:
        raise DataError(f"{path}: the recording is silent (every sample is 0)")
    return peak


def write_audio(
    path: str | Path, waveform: torch.Tensor, sample_rate: int, subtype: str = "PCM_16"
) -> Path:
    """Write a mono (T,) or (channels, T) float waveform in [-1, 1] as WAV/FLAC/OGG (by suffix)."""
    path = Path(path)
    data = torch.as_tensor(waveform, dtype=torch.float32).clamp(-1.0, 1.0).cpu().numpy()
    if data.ndim == 2:
        data = data.T
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".ogg":
        subtype = "VORBIS"
    sf.write(str(path), data, int(sample_rate), subtype=subtype)
    return path
