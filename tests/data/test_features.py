"""The log-mel front-end and labelled clips read as frames."""

import pytest
import torch
from mamba_bio_audio.data import FSDD_DIR, LabeledClips, LogMel, tokenizer_from_dict


def test_logmel_shapes_normalisation_and_round_trip():
    mel = LogMel(8000, n_mels=40)
    assert (mel.win_length, mel.hop_length, mel.n_fft, mel.feature_dim) == (200, 80, 256, 40)
    t = torch.arange(8000) / 8000
    wave = 0.5 * torch.sin(2 * torch.pi * 440 * t)
    x = mel.encode(wave)
    assert x.shape == (mel.n_frames(8000), 40) == (101, 40) and x.dtype == torch.float32
    assert abs(float(x.mean())) < 1e-4 and float(x.std(unbiased=False)) == pytest.approx(1, 1e-3)
    # per-clip normalisation: the gain of the clip does not matter
    torch.testing.assert_close(mel.encode(0.1 * wave), x, rtol=1e-3, atol=1e-3)
    assert mel.encode(wave[:100]).shape == (2, 40)  # shorter than one window: zero-padded edges
    again = tokenizer_from_dict(mel.to_dict())
    assert isinstance(again, LogMel) and again.to_dict() == mel.to_dict()
    assert torch.equal(again.encode(wave), x)
    with pytest.raises(ValueError, match="normalize"):
        LogMel(8000, normalize="global")


def test_clips_as_mel_frames_with_padding_masks():
    mel = LogMel(8000, n_mels=32)
    test = LabeledClips(FSDD_DIR, "test", split_by="fsdd", seq_len=60, sample_rate=8000,
                        tokenizer=mel)
    assert len(test) == 300
    lengths = []
    for i in range(len(test)):
        item = test[i]
        assert item["ids"].shape == (60, 32) and item["mask"].shape == (60,)
        assert item["waveform"].shape == (60 * 80,)
        n = int(item["mask"].sum())
        frames = mel.n_frames(len(test.waves[i]))
        assert n == min(60, frames) and item["mask"][:n].all()  # right padding
        assert (item["ids"][n:] == 0).all()
        torch.testing.assert_close(item["ids"][:n], mel.encode(test.waves[i])[:n])
        lengths.append(n)
    assert min(lengths) < 60 == max(lengths)  # some clips padded, some cropped
    batch = torch.utils.data.default_collate([test[i] for i in range(4)])
    assert batch["ids"].shape == (4, 60, 32) and batch["mask"].dtype == torch.bool
    # seq_len defaults to the longest clip's frames
    full = LabeledClips(FSDD_DIR, "test", split_by="fsdd", sample_rate=8000, tokenizer=mel)
    assert full.seq_len == max(len(x) for x in full.features) > 60
