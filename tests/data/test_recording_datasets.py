"""Recording windows (long recordings) and labelled clips (spoken digits)."""

import numpy as np
import pytest
import soundfile as sf
import torch
from mamba_bio_audio.data import (
    FSDD_DIR,
    LONG_AUDIO_DIR,
    LabeledClips,
    LinearQuantizer,
    MuLaw,
    RecordingWindows,
)

from mamba_bio_audio.errors import DataError


def noise(path, seconds, rate=8000, amp=0.3, seed=0):
    x = amp * np.random.default_rng(seed).uniform(-1, 1, int(seconds * rate)).astype(np.float32)
    sf.write(path, x, rate)
    return x


def test_long_recordings_split_by_time_never_overlap():
    ds = {
        s: RecordingWindows(LONG_AUDIO_DIR, 4096, s, mode="random", num_samples=60, seed=2)
        for s in ("train", "val", "test")
    }
    for split, lo, hi in (("train", 0.0, 0.8), ("val", 0.8, 0.9), ("test", 0.9, 1.0)):
        for i in range(60):
            path, start, end = ds[split].window(i)
            frames = sf.info(str(path)).frames
            assert round(lo * frames) <= start and end <= round(hi * frames), (
                split,
                path,
                start,
                end,
            )
    item = ds["train"][0]
    assert item["ids"].shape == item["mask"].shape == item["waveform"].shape == (4096,)
    assert item["ids"].dtype == torch.long and 0 <= item["ids"].min() and item["ids"].max() < 256
    assert torch.equal(item["ids"], MuLaw().encode(item["waveform"]))


def test_windows_are_peak_scaled_reproducible_and_sequential_for_eval():
    train = RecordingWindows(LONG_AUDIO_DIR, 2048, "train", num_samples=10, seed=1)
    path, start, end = train.window(3)
    raw = sf.read(str(path), dtype="float32")[0]
    assert np.allclose(train[3]["waveform"].numpy(), raw[start:end] / np.abs(raw).max(), atol=1e-6)
    again = RecordingWindows(LONG_AUDIO_DIR, 2048, "train", num_samples=10, seed=1)
    assert all(torch.equal(train[i]["ids"], again[i]["ids"]) for i in range(10))
    again.set_epoch(1)
    assert not torch.equal(train[3]["ids"], again[3]["ids"])
    test = RecordingWindows(LONG_AUDIO_DIR, 22050, "test")
    held_out = [
        f - round(0.9 * f)
        for f in (sf.info(str(p)).frames for p in sorted(LONG_AUDIO_DIR.glob("*")))
    ]
    assert test.mode == "sequential" and len(test) == sum(n // 22050 for n in held_out) == 23
    assert [test.window(i)[1] for i in range(2)] == [test.window(0)[1], test.window(0)[1] + 22050]


def test_resampled_windows(tmp_path):
    with pytest.warns(UserWarning, match="resampling to 16000 Hz"):
        ds = RecordingWindows(LONG_AUDIO_DIR, 16000, "val", sample_rate=16000, max_windows=3)
        item = ds[1]
    assert ds.sample_rate == 16000 and item["waveform"].shape == (16000,)
    _, start, end = ds.window(1)
    assert end - start == 22050


def test_split_by_file(tmp_path):
    for k in range(5):
        noise(tmp_path / f"r{k}.wav", 1.0, seed=k)
    ds = {
        s: RecordingWindows(tmp_path, 1000, s, split_by="file", fractions=(0.6, 0.2, 0.2))
        for s in ("train", "val", "test")
    }
    files = {s: {d.window(i)[0].name for i in range(len(d))} for s, d in ds.items()}
    assert files == {"train": {"r0.wav", "r1.wav", "r2.wav"}, "val": {"r3.wav"}, "test": {"r4.wav"}}


def test_iter_tokens_covers_each_recording(tmp_path):
    noise(tmp_path / "a.wav", 0.5)
    x = sf.read(tmp_path / "a.wav", dtype="float32")[0]
    ds = RecordingWindows(
        tmp_path, 100, "train", fractions=(1, 0, 0), tokenizer=LinearQuantizer(256), scale=None
    )
    ids = torch.cat([chunk for _, chunk in ds.iter_tokens(chunk_size=777)])
    assert torch.equal(ids, LinearQuantizer(256).encode(torch.from_numpy(x)))


def test_recording_shorter_than_the_window(tmp_path):
    noise(tmp_path / "short.wav", 0.1)
    with pytest.raises(DataError, match=r"short.wav: .*shorter than the window of 1000 samples"):
        RecordingWindows(tmp_path, 1000, "train")
    noise(tmp_path / "long.wav", 1.0)
    with pytest.warns(UserWarning, match="skipping 1 recording"):
        ds = RecordingWindows(tmp_path, 1000, "train")
    assert {ds.window(i)[0].name for i in range(len(ds))} == {"long.wav"}


def test_silent_and_broken_recordings_skipped_when_allowed(tmp_path):
    noise(tmp_path / "good.wav", 1.0)
    sf.write(tmp_path / "silent.wav", np.zeros(8000, np.float32), 8000)
    (tmp_path / "broken.flac").write_text("not audio")
    with pytest.raises(DataError, match="broken.flac: not a readable audio file"):
        RecordingWindows(tmp_path, 1000)
    (tmp_path / "broken.flac").unlink()
    with pytest.raises(DataError, match="silent.wav: the recording is silent"):
        RecordingWindows(tmp_path, 1000)
    (tmp_path / "broken.flac").write_text("not audio")
    with pytest.warns(UserWarning, match="skipped 2 of 3 recordings"):
        ds = RecordingWindows(tmp_path, 1000, skip_bad=True)
    assert len(ds.skipped) == 2 and [r.path.name for r in ds.regions] == ["good.wav"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no audio files"):
        RecordingWindows(tmp_path / "empty", 10)


def test_spoken_digits_official_split():
    test = LabeledClips(FSDD_DIR, "test", split_by="fsdd", seq_len=8000)
    assert len(test) == 300 and test.class_names == [str(d) for d in range(10)]
    assert all(int(p.stem.rsplit("_", 1)[1]) < 5 for p in test.files)
    assert [test.labels.count(k) for k in range(10)] == [30] * 10
    item = test[0]
    assert item["ids"].shape == item["mask"].shape == item["waveform"].shape == (8000,)
    n = int(item["mask"].sum())
    assert n == min(8000, len(test.waves[0])) and (item["ids"][n:] == MuLaw().pad_id).all()
    assert float(item["waveform"][:n].abs().max()) == pytest.approx(1.0)
    assert test.files[0].name.startswith(test.class_names[item["label"]] + "_")


def test_clip_labels_from_folders_and_hash_split(tmp_path):
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for k in range(10):
            noise(tmp_path / label / f"{k}.wav", 0.05, seed=k)
    splits = {
        s: LabeledClips(tmp_path, s, label_from="folder", seq_len=300)
        for s in ("train", "val", "test")
    }
    assert splits["train"].class_names == ["cat", "dog"]
    assert [len(d) for d in splits.values()] == [16, 2, 2]
    names = [{str(p) for p in d.files} for d in splits.values()]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    assert all(
        d.files[i].parent.name == d.class_names[d.labels[i]]
        for d in splits.values()
        for i in range(len(d))
    )
    cropped = splits["train"][0]
    assert cropped["mask"].all() and cropped["ids"].shape == (300,)


def test_clip_label_set_that_differs_between_splits(tmp_path):
    for name in ("a_x_1", "a_x_12", "b_x_13", "c_x_2"):
        noise(tmp_path / f"{name}.wav", 0.05)
    with pytest.raises(
        DataError, match=r"split 'test' has labels \['c'\] that do not appear in split 'train'"
    ):
        LabeledClips(tmp_path, "train", split_by="fsdd")


def test_bad_clips_are_named_or_skipped(tmp_path):
    for k in range(12):
        noise(tmp_path / f"1_s_{k}.wav", 0.05, seed=k)
    sf.write(tmp_path / "2_s_20.wav", np.zeros(400, np.float32), 8000)
    (tmp_path / "2_s_21.wav").write_bytes(b"RIFF")
    with pytest.raises(DataError, match=r"2_s_2\d.wav"):
        LabeledClips(tmp_path, "train", split_by="fsdd")
    with pytest.warns(UserWarning, match="skipped 2 clips"):
        ds = LabeledClips(tmp_path, "train", split_by="fsdd", skip_bad=True)
    assert len(ds) == 2 and ds.class_names == ["1", "2"]
    (tmp_path / "nolabel.wav").write_bytes((tmp_path / "1_s_0.wav").read_bytes())
    with pytest.raises(DataError, match="nolabel.wav: cannot read a label"):
        LabeledClips(tmp_path, "train")
