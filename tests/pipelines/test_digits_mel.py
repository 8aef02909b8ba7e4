"""Spoken digits through the log-mel front-end: classify end to end, then predict on WAV and
FLAC files with the same features (seconds)."""

import csv
import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch
from mamba_bio_audio.data import FSDD_DIR, LogMel
from mamba_bio_audio.pipelines.common.model_files import load_tokenizer
from mamba_bio_audio.pipelines.common.run_config import load_run_config

from mamba_bio_audio.cli import main as cli
from mamba_bio_audio.errors import ConfigError
from mamba_bio_audio.models import MambaClassifier

TINY = ["model.d_model=16", "model.n_layer=1", "model.d_state=4", "train.steps=4",
        "train.eval_every=4", "train.log_every=1", "train.batch_size=4", "train.warmup_steps=1",
        "train.progress=false"]


@pytest.fixture
def clips(tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    for digit in (0, 1, 2):
        for path in sorted(FSDD_DIR.glob(f"{digit}_jackson_*.flac"))[:8]:
            shutil.copy(path, folder / path.name)
    return folder


def test_default_digits_config_reads_log_mel():
    cfg = load_run_config("classify_digits")
    assert cfg.data.features == "mel" and cfg.data.sample_rate == 8000
    assert load_run_config("classify_digits_waveform").data.features == "waveform"
    with pytest.raises(ConfigError, match="data.features=mel is for audio clip classification"):
        load_run_config("pretrain_audio", ["data.features=mel"])
    with pytest.raises(ConfigError, match="data.features='mfcc': expected one of waveform, mel"):
        load_run_config("classify_digits", ["data.features=mfcc"])


def test_classify_digits_mel_then_predict_wav_and_flac(tmp_path, clips, capsys):
    run = tmp_path / "cls"
    assert cli(["classify", "--config", "classify_digits", "--out", str(run),
                f"data.path={clips}", "data.n_mels=24", "data.seq_len=80",
                "data.val_fraction=0.2", "data.test_fraction=0.2", *TINY]) == 0
    s = json.loads((run / "summary.json").read_text())
    assert s["classes"] == ["0", "1", "2"] and s["baseline"]["name"].startswith("MFCC")
    assert s["tokens_seen"] == 4 * 4 * 80  # frames
    best = run / "checkpoints" / "best"
    model = MambaClassifier.from_pretrained(best).eval()
    assert model.config.input_dim == 24 and not hasattr(model.backbone, "embedding")
    tok = load_tokenizer(best)
    assert isinstance(tok, LogMel) and tok.n_mels == 24 and tok.sample_rate == 8000

    flac = min(clips.glob("2_*.flac"))
    wav = tmp_path / "clip.wav"
    data, rate = sf.read(flac, dtype="int16")
    sf.write(wav, data, rate, subtype="PCM_16")
    out = tmp_path / "p.csv"
    assert cli(["predict", "--model", str(best), str(flac), str(wav), "--out", str(out)]) == 0
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert [r["record"] for r in rows] == [flac.stem, "clip"]
    p = np.array([[float(r[f"p_{c}"]) for c in "012"] for r in rows])
    np.testing.assert_allclose(p[0], p[1], atol=1e-5)  # the same samples, WAV or FLAC

    # predict computes the features that training did: the same probabilities as the model on
    # the dataset's item (peak-normalised clip -> log-mel -> padded to seq_len with its mask)
    wave, _ = sf.read(flac, dtype="float32")
    x = tok.encode(torch.from_numpy(wave / np.abs(wave).max()))[:80]
    with torch.no_grad():
        expected = torch.softmax(model(x[None]), -1)[0].numpy()
    np.testing.assert_allclose(p[0], expected, atol=1e-5)

    capsys.readouterr()
    assert cli(["classify", "--config", "classify_digits", "--out", str(tmp_path / "x"),
                f"data.path={clips}", "data.val_fraction=0.2", "data.test_fraction=0.2",
                "--init", str(best), *TINY]) == 2
    assert "a pretrained LM reads token ids" in capsys.readouterr().err
