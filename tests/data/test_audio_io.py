"""Audio reading in blocks, mono mixing, resampling, writing, and bad audio files."""

import warnings

import numpy as np
import pytest
import soundfile as sf
import torch
from mamba_bio_audio.data import (
    FSDD_DIR,
    LONG_AUDIO_DIR,
    audio_info,
    iter_blocks,
    read_audio,
    write_audio,
)
from mamba_bio_audio.data import audio as audio_module

from mamba_bio_audio.errors import DataError


def tone(seconds=1.0, rate=8000, freq=440.0, amp=0.5):
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_partial_read_equals_slice_of_full_read():
    path = next(LONG_AUDIO_DIR.glob("*.flac"))
    full, rate = read_audio(path)
    part, _ = read_audio(path, start=12345, frames=1000)
    assert rate == 22050 and full.dtype == torch.float32
    assert torch.equal(part, full[12345:13345])
    blocks = list(iter_blocks(path, blocksize=100000))
    assert all(len(b) == 100000 for b in blocks[:-1])
    assert torch.equal(torch.cat(blocks), full)


def test_stereo_is_mixed_to_mono(tmp_path):
    left, right = tone(0.1), tone(0.1, freq=1000)
    sf.write(tmp_path / "st.wav", np.stack([left, right], 1), 8000, subtype="FLOAT")
    wave, _ = read_audio(tmp_path / "st.wav")
    assert wave.shape == (800,)
    assert np.allclose(wave.numpy(), (left + right) / 2, atol=1e-6)


def test_other_sample_rate_is_resampled_and_said_once(tmp_path, monkeypatch):
    monkeypatch.setattr(audio_module, "_resample_notes", set())
    for k in range(2):
        sf.write(tmp_path / f"t{k}.wav", tone(1.0, 8000, 300), 8000)
    with pytest.warns(UserWarning, match="recorded at 8000 Hz, resampling to 16000 Hz") as record:
        a, rate = read_audio(tmp_path / "t0.wav", sample_rate=16000)
        read_audio(tmp_path / "t1.wav", sample_rate=16000)
    assert len([w for w in record if "resampling" in str(w.message)]) == 1
    assert rate == 16000 and a.shape == (16000,)
    expect = tone(1.0, 16000, 300)
    assert np.abs(a.numpy()[100:-100] - expect[100:-100]).max() < 0.01


def test_write_then_read_round_trip(tmp_path):
    x = torch.from_numpy(tone(0.5, 16000))
    for suffix in (".wav", ".flac"):
        path = write_audio(tmp_path / f"out{suffix}", x, 16000)
        y, rate = read_audio(path)
        assert rate == 16000 and (y - x).abs().max() < 1 / 32767 + 1e-6
    clipped, _ = read_audio(write_audio(tmp_path / "loud.wav", 3 * x, 16000))
    assert clipped.abs().max() <= 1.0


def test_missing_empty_and_not_audio(tmp_path):
    with pytest.raises(DataError, match="gone.wav: audio file not found"):
        read_audio(tmp_path / "gone.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty.wav: the file is empty \(0 bytes\)"):
        read_audio(tmp_path / "empty.wav")
    (tmp_path / "text.wav").write_text("this is not audio at all " * 10)
    with pytest.raises(DataError, match="text.wav: not a readable audio file"):
        audio_info(tmp_path / "text.wav")
    sf.write(tmp_path / "nosamples.wav", np.zeros(0, np.float32), 8000)
    with pytest.raises(DataError, match="nosamples.wav: the recording has no samples"):
        read_audio(tmp_path / "nosamples.wav")


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_truncated_file(tmp_path, suffix):
    sf.write(tmp_path / f"full{suffix}", tone(1.0), 8000)
    data = (tmp_path / f"full{suffix}").read_bytes()
    (tmp_path / f"cut{suffix}").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=f"cut{suffix}: .*truncated"):
        read_audio(tmp_path / f"cut{suffix}")


def test_bundled_clips_read_cleanly():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for path in sorted(FSDD_DIR.glob("0_*_1.flac")):
            wave, rate = read_audio(path)
            assert rate == 8000 and 0 < wave.abs().max() <= 1.0


@pytest.mark.parametrize("subtype, step", [("PCM_24", 2.0 ** -23), ("PCM_U8", 2.0 ** -7),
                                           ("PCM_16", 2.0 ** -15), ("DOUBLE", 1e-12)])
def test_wav_sample_formats_real_recorders_write(tmp_path, subtype, step):
    """24-bit (field recorders), unsigned 8-bit (old telephony corpora), 16-bit and float WAVs
    read as the same float waveform, to within each format's quantization step."""
    x = tone(0.25)
    path = tmp_path / f"{subtype}.wav"
    sf.write(path, x, 8000, subtype=subtype)
    wave, rate = read_audio(path)
    assert rate == 8000 and wave.dtype == torch.float32 and wave.shape == (len(x),)
    assert float((wave - torch.from_numpy(x)).abs().max()) <= step
