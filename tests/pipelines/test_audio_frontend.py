"""One audio front-end: a recording gives the model the same inputs in training and at use.

- a clip through `classify` training (the dataset built from the run's config) and through
  `predict` (the front-end rebuilt from the checkpoint's tokenizer.json and data_config.json, and
  the batch `predict` feeds the model): bit-identical inputs and masks, for log-mel frames and
  mu-law ids, for clips that fit the window and clips longer than it, at a rate the model
  resamples from, and for a stereo file;
- an audio prompt through `finetune`'s windows and through `generate`: bit-identical ids;
- both against a reference computed here from soundfile and torchaudio.functional (read, mean
  of the channels, resample, divide by the file's peak, encode).

The recordings are made so that a front-end that normalised by anything but the file's peak
(the clip's excerpt, the resampled samples) or padded differently would give other inputs.
"""

from __future__ import annotations

import dataclasses
import json
from argparse import Namespace

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from mamba_bio_audio.cli import main as cli
from mamba_bio_audio.config import MambaConfig
from mamba_bio_audio.data import LogMel, MuLaw, RecordingWindows, pad_or_crop
from mamba_bio_audio.models import MambaLM
from mamba_bio_audio.pipelines import generate, predict
from mamba_bio_audio.pipelines.common import inference
from mamba_bio_audio.pipelines.common.datasets import classification_datasets
from mamba_bio_audio.pipelines.common.model_files import (load_data_config, load_frontend,
                                                          load_tokenizer, save_tokenizer)
from mamba_bio_audio.pipelines.common.run_config import DataConfig, load_run_config

TINY = ["model.d_model=16", "model.n_layer=1", "model.d_state=4", "train.steps=1",
        "train.eval_every=1", "train.batch_size=2", "train.warmup_steps=0",
        "train.progress=false"]


def recording(path, seconds: float, rate: int, seed: int, channels: int = 1):
    """Noise with a loud burst near the end: the file's peak is not the first part's."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    x = 0.2 * rng.standard_normal((n, channels)).clip(-3, 3) / 3
    x[int(0.85 * n):int(0.85 * n) + 50] *= 4.5
    sf.write(path, x.astype(np.float32), rate, subtype="FLOAT")
    return path


def reference_wave(path, rate: int) -> torch.Tensor:
    """The whole file at `rate`, divided by the file's peak, from soundfile and torchaudio."""
    data, file_rate = sf.read(path, dtype="float32", always_2d=True)
    x = torch.from_numpy(data.mean(axis=1))
    peak = x.abs().max()
    if file_rate != rate:
        x = AF.resample(x, file_rate, rate)
    return x / peak


def clips_folder(folder, rate: int):
    """Clips of 0.12-0.6 s of digits 0 and 1 in FSDD's naming (indices 0-4 test, 5-9 val)."""
    folder.mkdir()
    for digit in (0, 1):
        for k in range(12):
            recording(folder / f"{digit}_s_{k}.wav", 0.12 + 0.04 * k, rate, 10 * digit + k,
                      channels=2 if k == 3 else 1)
    return folder


def train_and_predict_inputs(tmp_path, features: list[str]):
    """Train a tiny classifier on 16 kHz clips read at 8 kHz; for every test clip: (the item the
    classify dataset gives, the first batch row and mask predict builds, the checkpoint)."""
    clips = clips_folder(tmp_path / "clips", 16000)
    run = tmp_path / "run"
    assert cli(["classify", "--config", "classify_digits", "--no-baseline", "--out", str(run),
                f"data.path={clips}", "data.sample_rate=8000", "data.val_fraction=0.25",
                "data.test_fraction=0.25", *features, *TINY]) == 0
    data = classification_datasets(load_run_config(run / "config.yaml").data)
    folder = run / "checkpoints" / "last"
    clf = predict.load_classifier(Namespace(model=str(folder), seq_len=None, stride=None,
                                            device="cpu"))
    for i, path in enumerate(data.test.files):
        batch = list(predict.audio_items(path, clf.frontend, clf.seq_len, clf.stride))
        ids, mask = inference.pad_batch(batch[:1], clf.tokenizer.pad_id, clf.model.config)
        yield path, data.test[i], ids[0], mask[0], len(batch), folder


def test_a_clip_gets_the_same_mel_frames_in_classify_training_and_in_predict(tmp_path):
    seen_long = seen_short = 0
    for path, item, ids, mask, windows, folder in train_and_predict_inputs(
            tmp_path, ["data.seq_len=30"]):
        assert torch.equal(ids, item["ids"]) and torch.equal(mask, item["mask"]), path
        mel = LogMel.from_dict(json.loads((folder / "tokenizer.json").read_text()))
        expected, expected_mask = pad_or_crop(mel.encode(reference_wave(path, 8000)), 30, 0.0)
        torch.testing.assert_close(ids, expected, rtol=0, atol=1e-5)
        assert torch.equal(mask, expected_mask)
        seen_long += windows > 1
        seen_short += not mask.all()
    assert seen_long and seen_short  # clips cropped (several windows in predict) and padded


def test_a_clip_gets_the_same_mulaw_ids_in_classify_training_and_in_predict(tmp_path):
    seen_long = 0
    for path, item, ids, mask, windows, _ in train_and_predict_inputs(
            tmp_path, ["data.features=waveform", "data.seq_len=2400", "model.bidirectional=false",
                       "model.input_dim=0"]):
        assert torch.equal(ids, item["ids"]) and torch.equal(mask, item["mask"]), path
        reference = AF.mu_law_encoding(reference_wave(path, 8000).clamp(-1, 1), 256)
        expected, expected_mask = pad_or_crop(reference, 2400, MuLaw().pad_id)
        assert (ids != expected).float().mean() < 0.002  # resampler rounding at a few samples
        assert torch.equal(mask, expected_mask)
        seen_long += windows > 1
    assert seen_long


def lm_checkpoint(folder, rate: int):
    model = MambaLM(MambaConfig(d_model=16, n_layer=1, d_state=4, vocab_size=256))
    model.save_pretrained(folder, save_tokenizer(MuLaw(), DataConfig(kind="recordings",
                                                                     sample_rate=rate)))
    return folder


def test_a_prompt_gets_the_same_ids_in_finetune_and_in_generate(tmp_path):
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    at_8k = recording(recordings / "a.wav", 3.0, 8000, 1)
    at_16k = recording(recordings / "b.wav", 3.0, 16000, 2, channels=2)
    fine = tmp_path / "fine"
    assert cli(["finetune", "--model", str(lm_checkpoint(tmp_path / "lm", 8000)),
                "--recordings", str(recordings), "--out", str(fine), "data.seq_len=256",
                "data.val_items=2", "data.test_items=2", *TINY[3:]]) == 0
    folder = fine / "checkpoints" / "last"
    tok, saved = load_tokenizer(folder), load_data_config(folder)
    d = dataclasses.replace(load_run_config(fine / "config.yaml").data, seq_len=800)
    for path in (at_8k, at_16k):
        windows = RecordingWindows([path], d.seq_len, "train", split_by="time",
                                   fractions=d.fractions, sample_rate=d.sample_rate,
                                   mode="sequential", tokenizer=MuLaw(d.mu_law_levels))
        assert windows.window(0)[1] == 0  # finetune's training window at the start of the file
        args = Namespace(prompt=str(path), prompt_seconds=0.1)
        prompt = generate.audio_prompt(args, load_frontend(tok, saved))
        assert torch.equal(prompt, windows[0]["ids"]), path
    reference = AF.mu_law_encoding(reference_wave(at_8k, 8000)[:800].clamp(-1, 1), 256)
    assert torch.equal(generate.audio_prompt(Namespace(prompt=str(at_8k), prompt_seconds=0.1),
                                             load_frontend(tok, saved)), reference)
