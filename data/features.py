"""Audio front-ends that turn a waveform into a sequence of float feature vectors.

``LogMel``: a log-mel spectrogram (torchaudio's ``MelSpectrogram`` and ``AmplitudeToDB``), one
frame every ``hop_length`` samples (10 ms by default), normalised per clip. It has the tokenizer
interface that the datasets and pipelines use (``encode``, ``pad_id``, ``to_dict``/``from_dict``,
rebuilt by ``tokenizer_from_dict``), but ``encode`` returns float frames (frames, n_mels) instead
of ids, and ``feature_dim`` (= n_mels) replaces ``vocab_size``: a model reading them needs
``MambaConfig.input_dim = feature_dim``.
"""

from __future__ import annotations

import torch

NORMALIZE = ("utterance", "none")


class LogMel:
    """Log-mel spectrogram frames of a mono waveform.

    Args:
        sample_rate: rate of the waveforms given to ``encode`` (Hz).
        n_mels: mel bands, the size of each feature vector.
        win_length: analysis window in samples (default: 25 ms).
        hop_length: samples between frames (default: 10 ms).
        n_fft: FFT size (default: the smallest power of two >= win_length).
        f_min, f_max: mel filter bank range in Hz (f_max default: sample_rate / 2).
        top_db: floor of the dB scale, this many dB below the clip's loudest bin.
        normalize: "utterance" (subtract the clip's mean and divide by its standard deviation,
            over all its frames and bands) or "none" (dB values as they are).

    ``encode`` of n samples gives ``n_frames(n) = 1 + n // hop_length`` frames (centred windows,
    zero padding at the edges). ``pad_id`` (0.0) is the value padded frames take: the clip mean
    after normalisation.
    """

    type_name = "logmel"
    pad_id = 0.0

    def __init__(self, sample_rate: int, n_mels: int = 40, win_length: int | None = None,
                 hop_length: int | None = None, n_fft: int | None = None, f_min: float = 0.0,
                 f_max: float | None = None, top_db: float = 80.0, normalize: str = "utterance"):
        if normalize not in NORMALIZE:
            raise ValueError(f"normalize must be one of {NORMALIZE}, got {normalize!r}")
        self.sample_rate, self.n_mels = int(sample_rate), int(n_mels)
        self.win_length = int(win_length or round(0.025 * self.sample_rate))
        self.hop_length = int(hop_length or round(0.010 * self.sample_rate))
        self.n_fft = int(n_fft or 1 << (self.win_length - 1).bit_length())
        self.f_min, self.f_max = float(f_min), None if f_max is None else float(f_max)
        self.top_db, self.normalize = float(top_db), normalize
        if min(self.n_mels, self.win_length, self.hop_length) < 1 or self.n_fft < self.win_length:
            raise ValueError(f"LogMel: n_mels, win_length and hop_length must be positive and "
                             f"n_fft >= win_length; got {self.to_dict()}")
        self._transforms = None

    @property
    def feature_dim(self) -> int:
        return self.n_mels

    def n_frames(self, n_samples: int) -> int:
        """Frames that ``encode`` makes of ``n_samples`` samples."""
        return 1 + int(n_samples) // self.hop_length

    def _build(self):
        import torchaudio.transforms as T

        mel = T.MelSpectrogram(sample_rate=self.sample_rate, n_fft=self.n_fft,
                               win_length=self.win_length, hop_length=self.hop_length,
                               f_min=self.f_min, f_max=self.f_max, n_mels=self.n_mels,
                               center=True, pad_mode="constant")
        return mel, T.AmplitudeToDB(stype="power", top_db=self.top_db)

    @torch.no_grad()
    def encode(self, waveform: torch.Tensor) -> torch.Tensor:
        """Waveform (T,) float -> FloatTensor (n_frames(T), n_mels)."""
        if self._transforms is None:
            self._transforms = self._build()
        mel, to_db = self._transforms
        wave = torch.as_tensor(waveform, dtype=torch.float32).reshape(1, -1)
        x = to_db(mel(wave))[0].T  # (frames, n_mels)
        if self.normalize == "utterance":
            x = (x - x.mean()) / x.std(unbiased=False).clamp_min(1e-5)
        return x.contiguous()

    def to_dict(self) -> dict:
        return {"type": self.type_name, "sample_rate": self.sample_rate, "n_mels": self.n_mels,
                "win_length": self.win_length, "hop_length": self.hop_length,
                "n_fft": self.n_fft, "f_min": self.f_min, "f_max": self.f_max,
                "top_db": self.top_db, "normalize": self.normalize}

    @classmethod
    def from_dict(cls, d: dict) -> LogMel:
        return cls(**{k: v for k, v in d.items() if k != "type"})

    def __getstate__(self):  # the torchaudio modules are rebuilt on first use
        return {**self.__dict__, "_transforms": None}

    def __repr__(self) -> str:
        return (f"LogMel(sample_rate={self.sample_rate}, n_mels={self.n_mels}, "
                f"hop_length={self.hop_length}, normalize={self.normalize!r})")
