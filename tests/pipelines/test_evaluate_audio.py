"""`evaluate-audio` end to end on a tiny clip LM and a tiny digits classifier trained here (CPU,
seconds), its parts (clips as the LM makes them, the classifier's features), its bad inputs, and
the paper-sized U-Net configs of SC09-style generation on FSDD."""

import json
import shutil

import numpy as np
import pytest
import torch

from mamba_bio_audio.cli import main as cli
from mamba_bio_audio.config import MambaConfig
from mamba_bio_audio.data import FSDD_DIR, AudioFrontEnd, MuLaw
from mamba_bio_audio.models import MambaClassifier, MambaLM
from mamba_bio_audio.pipelines.common.datasets import lm_datasets
from mamba_bio_audio.pipelines.common.model_files import (load_data_config, load_frontend,
                                                          load_tokenizer, save_tokenizer)
from mamba_bio_audio.pipelines.common.run_config import DataConfig, load_run_config
from mamba_bio_audio.pipelines.evaluate_audio import (as_lm_clips, classifier_outputs,
                                                       trim_silence)

TINY = ["model.d_model=16", "model.n_layer=1", "model.d_state=4", "train.steps=3",
        "train.eval_every=3", "train.log_every=1", "train.batch_size=4", "train.warmup_steps=1",
        "train.progress=false"]
SPLIT = ["data.val_fraction=0.2", "data.test_fraction=0.2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """24 FSDD clips (digits 0-2), a clip LM of 64 samples and a log-mel classifier on them."""
    root = tmp_path_factory.mktemp("evaluate_audio")
    clips = root / "clips"
    clips.mkdir()
    for digit in (0, 1, 2):
        for path in sorted(FSDD_DIR.glob(f"{digit}_jackson_*.flac"))[:8]:
            shutil.copy(path, clips / path.name)
    assert cli(["pretrain", "--out", str(root / "lm"), "data.kind=digits", f"data.path={clips}",
                "data.seq_len=64", "markov_max_order=2", *SPLIT, *TINY]) == 0
    assert cli(["classify", "--config", "classify_digits", "--out", str(root / "cls"),
                f"data.path={clips}", "data.n_mels=24", "data.seq_len=80", "--no-baseline",
                *SPLIT, *TINY]) == 0
    return root


def evaluate(*argv) -> int:
    return cli(["evaluate-audio", *map(str, argv)])


def test_evaluate_audio_end_to_end(runs, capsys):
    out = runs / "eval"
    capsys.readouterr()
    assert evaluate("--model", runs / "lm", "--classifier", runs / "cls", "--n", 5,
                    "--batch-size", 3, "--wavs", 2, "--out", out) == 0
    printed = capsys.readouterr().out
    for row in ("generated (model)", "real, held out (ceiling)", "white noise (floor)"):
        assert row in printed
    s = json.loads((out / "summary.json").read_text())
    assert s["clip_samples"] == 64 and s["sample_rate"] == 8000 and s["generated_clips"] == 5
    n_test = s["reference"]["clips"]
    assert n_test >= 2 and s["nll_test_samples"] == 63 * n_test  # every clip is > 64 samples
    assert 5 < s["nll_bits_per_sample"] < 9  # 3 steps from 8 bits (256 levels, uniform)
    assert s["scores"]["generated"]["nll_bits_per_sample"] == s["nll_bits_per_sample"]
    for name, n in (("generated", 5), ("real", None), ("noise", 5)):
        r = s["scores"][name]
        assert n is None or r["clips"] == n
        assert r["fid"] >= 0 and 1 <= r["is"] <= 3 and r["mis"] >= 1 and r["am"] >= 0, name
        assert sum(r["heard_digits"].values()) == r["clips"]
        assert set(r["heard_digits"]) == {"0", "1", "2"}
    assert 0 <= s["scores"]["real"]["classifier_accuracy"] <= 1
    assert sorted(p.name for p in out.iterdir()) == ["sample_0.wav", "sample_1.wav",
                                                     "samples.png", "summary.json"]
    import soundfile as sf
    wave, rate = sf.read(out / "sample_0.wav")
    assert rate == 8000 and wave.shape == (64,)
    # the same seed gives the same clips and scores
    assert evaluate("--model", runs / "lm", "--classifier", runs / "cls", "--n", 5,
                    "--batch-size", 5, "--wavs", 0, "--out", runs / "again") == 0
    again = json.loads((runs / "again" / "summary.json").read_text())
    assert again["scores"]["noise"] == s["scores"]["noise"]
    assert again["nll_bits_per_sample"] == s["nll_bits_per_sample"]


def test_clips_reach_the_classifier_as_the_lm_makes_them():
    tok = MuLaw()
    clips = as_lm_clips([torch.tensor([0.0, 0.5, -0.25]), torch.linspace(-2, 2, 10)],
                        AudioFrontEnd(tok, 8000), 6)
    assert clips.shape == (2, 6)
    assert torch.equal(clips[0], tok.decode(tok.encode(torch.tensor([0, 1, -0.5, 0, 0, 0]))))
    assert torch.equal(clips[1], tok.decode(tok.encode(torch.linspace(-2, 2, 10)[:6] / 2)))


def test_the_classifier_hears_clips_trimmed_of_silence():
    w = torch.tensor([0.0, 0.002, 0.5, -1.0, 0.02, 0.005, 0.0, 0.0])
    assert torch.equal(trim_silence(w), w[2:5])  # 0.002 and 0.005 are below -40 dB of the peak
    assert torch.equal(trim_silence(w, db=-60), w[1:6])
    assert torch.equal(trim_silence(torch.zeros(4)), torch.zeros(4))


def test_classifier_features_are_the_input_of_its_last_layer(runs):
    folder = runs / "cls" / "checkpoints" / "best"
    model = MambaClassifier.from_pretrained(folder).eval()
    waves = torch.randn(5, 800, generator=torch.Generator().manual_seed(0))
    frontend = load_frontend(load_tokenizer(folder), load_data_config(folder))
    features, probs = classifier_outputs(model, frontend, waves, 80, 2, "cpu",
                                         {"disable": True}, "noise")
    assert features.shape == (5, 16) and probs.shape == (5, 3)
    with torch.no_grad():
        again = torch.softmax(model.head(torch.from_numpy(features)), -1).numpy()
    np.testing.assert_allclose(again, probs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-6)
    assert not model.head._forward_hooks  # the hook is removed


def run_cli(argv, capsys):
    capsys.readouterr()
    try:
        rc = cli([str(a) for a in argv])
    except SystemExit as exc:  # argparse errors
        rc = exc.code
    return rc, capsys.readouterr().err


@pytest.fixture(scope="module")
def wrong_models(tmp_path_factory):
    """A DNA LM and a splice-junction classifier, saved with their tokenizer and data settings."""
    from mamba_bio_audio.data import DNATokenizer

    root = tmp_path_factory.mktemp("wrong")
    tok = DNATokenizer()
    MambaLM(MambaConfig(d_model=16, n_layer=1, vocab_size=tok.vocab_size)).save_pretrained(
        root / "dna_lm", save_tokenizer(tok, DataConfig(kind="genome")))
    MambaClassifier(MambaConfig(d_model=16, n_layer=1, vocab_size=tok.vocab_size,
                                n_classes=3)).save_pretrained(
        root / "splice", save_tokenizer(tok, DataConfig(kind="splice", seq_len=60)))
    return root


@pytest.mark.parametrize("case, message", [
    ("n1", "--n: expected an integer >= 2, got '1'"),
    ("missing", "--model {root}/nowhere: no such folder"),
    ("dna", "--model {wrong}/dna_lm: a DNA LM"),
    ("classifier_as_lm", "--model {runs}/cls: holds a classifier"),
    ("lm_as_classifier", "--classifier {runs}/lm: holds a language model"),
    ("not_digits", ("--classifier {wrong}/splice: a classifier of data.kind='splice'; expected "
                    "a spoken-digit classifier")),
    ("out_is_a_run", "--out {runs}/lm: already holds a run"),
])
def test_bad_input_is_one_line_and_leaves_nothing(runs, wrong_models, case, message, capsys):
    out = runs / f"bad-{case}"
    model, classifier = runs / "lm", runs / "cls"
    args = {"n1": ["--n", "1"], "out_is_a_run": []}.get(case, [])
    if case == "missing":
        model = runs / "nowhere"
    elif case == "dna":
        model = wrong_models / "dna_lm"
    elif case == "classifier_as_lm":
        model = runs / "cls"
    elif case == "lm_as_classifier":
        classifier = runs / "lm"
    elif case == "not_digits":
        classifier = wrong_models / "splice"
    elif case == "out_is_a_run":
        out = runs / "lm"
    rc, err = run_cli(["evaluate-audio", "--model", model, "--classifier", classifier,
                       "--out", out, *args], capsys)
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert message.format(root=runs, runs=runs, wrong=wrong_models) in err
    if case != "out_is_a_run":
        assert not out.exists()


def test_fsdd_unet_configs_are_the_paper_sized_unet_and_its_lti_ablation():
    sizes = {}
    for name in ("pretrain_fsdd_unet", "pretrain_fsdd_unet_lti"):
        cfg = load_run_config(name, command="pretrain")
        assert cfg.data.kind == "digits" and cfg.data.seq_len == cfg.data.sample_rate == 8000
        assert cfg.model.backbone == "unet" and cfg.model.unet_pool == [4, 4]
        model = MambaLM(MambaConfig(**{**cfg.model.to_dict(), "vocab_size": 256}))
        sizes[cfg.model.selective] = model.num_parameters()
    assert 5.5e6 < sizes[True] < 6.5e6  # the papers' SC09 models: 6.1M (Mamba), 6.8M (SaShiMi)
    assert sizes[False] < sizes[True]  # no input-dependent projections for delta, B, C


def test_whole_clips_are_padded_with_modelled_silence(tmp_path):
    for path in sorted(FSDD_DIR.glob("*_theo_1?.flac"))[:10]:
        shutil.copy(path, tmp_path / path.name)
    d = DataConfig(kind="digits", path=str(tmp_path), seq_len=8000, val_fraction=0.2,
                   test_fraction=0.2)
    data = lm_datasets(d)
    assert data.modality == "audio" and data.tokenizer.vocab_size == 256
    item = data.train[0]
    clip = data.train.clips.waves[0]
    n = min(len(clip), 8000)
    assert item["ids"].shape == (8000,) and bool(item["mask"].all())
    assert int(item["clip_mask"].sum()) == n and bool(item["clip_mask"][:n].all())
    assert bool((item["ids"][n:] == data.tokenizer.pad_id).all())
    with pytest.raises(Exception, match="data.features=waveform"):
        lm_datasets(DataConfig(kind="digits", path=str(tmp_path), features="mel"))


@pytest.mark.slow
def test_fsdd_unet_config_trains_on_the_cpu(runs, tmp_path):
    """The paper-sized config itself (5.85M parameters, 1 s clips) for two steps."""
    run = tmp_path / "unet"
    assert cli(["pretrain", "--config", "pretrain_fsdd_unet", "--out", str(run),
                f"data.path={runs / 'clips'}", *SPLIT, "train.steps=2", "train.eval_every=2",
                "train.batch_size=2", "train.precision=fp32", "train.progress=false",
                "--no-baselines"]) == 0
    s = json.loads((run / "summary.json").read_text())
    assert s["parameters"] == 5_850_304 and s["tokens_seen"] == 2 * 2 * 8000
    assert 5 < s["test_bits_per_token"] < 8.5
