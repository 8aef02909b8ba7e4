"""Every command end to end from the CLI on tiny configs and the bundled data (seconds each)."""

import csv
import json
import math
import os

import numpy as np
import pytest
import soundfile as sf
import torch
from mamba_bio_audio.data import LAMBDA_FASTA, LONG_AUDIO_DIR
from mamba_bio_audio.pipelines.common.datasets import classification_datasets
from mamba_bio_audio.pipelines.common.inference import predict_proba
from mamba_bio_audio.pipelines.training.metrics import read_metrics

from mamba_bio_audio.cli import main as cli
from mamba_bio_audio.models import MambaClassifier

TINY = ["model.d_model=16", "model.n_layer=1", "model.d_state=4", "train.steps=3",
        "train.eval_every=3", "train.log_every=1", "train.batch_size=4", "train.warmup_steps=1",
        "train.progress=false"]
TINY_UNET = ["model.backbone=unet", "model.unet_pool=[2, 2]", "model.mlp_expand=0"]


def summary(run_dir):
    return json.loads((run_dir / "summary.json").read_text())


def test_pretrain_dna_resume_and_generate(tmp_path):
    run = tmp_path / "pre"
    assert cli(["pretrain", "--out", str(run), f"data.path={LAMBDA_FASTA}", "data.seq_len=64",
                "data.val_items=4", "data.test_items=4", "markov_max_order=3", *TINY]) == 0
    s = summary(run)
    assert s["steps"] == 3 and s["tokens_seen"] == 3 * 4 * 64
    assert 0 < s["test_bits_per_token"] < 6 and math.isfinite(s["val_bits_per_token"])
    markov = s["baselines"]["markov_test_bits_per_token"]
    assert set(markov) == {"0", "1", "2", "3"} and all(1.5 < v < 2.2 for v in markov.values())
    for name in ("config.yaml", "metrics.csv", "loss_curve.png",
                 "checkpoints/best/tokenizer.json", "checkpoints/last/trainer_state.pt"):
        assert (run / name).is_file(), name

    # --resume continues the same run (its saved config) from step 3
    assert cli(["pretrain", "--resume", str(run), "train.steps=5", "--no-baselines"]) == 0
    assert [r["step"] for r in read_metrics(run / "metrics.csv")] == [1, 2, 3, 4, 5]
    assert summary(run)["steps"] == 5

    gen = tmp_path / "gen"
    assert cli(["generate", "--model", str(run / "checkpoints" / "last"), "--length", "40",
                "--n", "2", "--out", str(gen)]) == 0
    records = (gen / "generated.fa").read_text().split(">")[1:]
    assert len(records) == 2
    assert all(len("".join(r.splitlines()[1:])) == 40 for r in records)
    assert summary(gen)["step_ms_start"] > 0


def test_classify_splice_then_predict_matches_saved_model(tmp_path):
    run = tmp_path / "cls"
    assert cli(["classify", "--config", "classify_splice", "--out", str(run), *TINY,
                "train.steps=12", "train.eval_every=6", "train.lr=1e-2"]) == 0
    s = summary(run)
    assert s["classes"] == ["EI", "IE", "N"]
    assert np.array(s["confusion_matrix"]).sum() == s["test_items"] > 250
    assert s["baseline"]["accuracy"] > 0.6  # k-mer counts + logistic regression (~0.68)
    assert (run / "confusion_matrix.png").is_file()

    # the saved best checkpoint reproduces the reported test accuracy
    best = run / "checkpoints" / "best"
    model = MambaClassifier.from_pretrained(best)
    from mamba_bio_audio.pipelines.common.run_config import load_run_config
    data = classification_datasets(load_run_config(run / "config.yaml").data)
    probs, labels = predict_proba(model, data.test, 64, "cpu", progress=False)
    assert (probs.argmax(1) == labels).mean() == pytest.approx(s["test_accuracy"])

    # predict on a CSV: one row per sequence, probabilities that sum to 1, same as the model
    seqs = [data.test.records[i].sequence for i in range(3)]
    (tmp_path / "x.csv").write_text("name,sequence\n" + "".join(f"s{i},{q}\n"
                                                                 for i, q in enumerate(seqs)))
    assert cli(["predict", "--model", str(best), str(tmp_path / "x.csv"),
                "--out", str(tmp_path / "p.csv")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert [r["record"] for r in rows] == ["s0", "s1", "s2"]
    p = np.array([[float(r[f"p_{c}"]) for c in s["classes"]] for r in rows])
    np.testing.assert_allclose(p.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(p, probs[:3], atol=1e-5)


def test_reverse_complement_averaging_in_classify_and_predict(tmp_path):
    """data.rc_test: test and predict probabilities are the mean over the sequence and its
    reverse complement, each classified on its own (reference: the tokenizer's string RC)."""
    run = tmp_path / "cls"
    assert cli(["classify", "--config", "classify_splice", "--out", str(run), *TINY,
                "--no-baseline", "data.rc_test=true"]) == 0
    s = summary(run)
    assert s["test_reverse_complement_averaged"] is True
    best = run / "checkpoints" / "best"
    model = MambaClassifier.from_pretrained(best).eval()
    from mamba_bio_audio.pipelines.common.run_config import load_run_config
    data = classification_datasets(load_run_config(run / "config.yaml").data)
    tok = data.tokenizer
    seqs = [data.test.records[i].sequence[: 20 + 10 * i] for i in range(4)]  # ragged
    with torch.no_grad():
        one = [torch.softmax(model(tok.encode(q)[None]), -1)[0] for q in seqs]
        rc = [torch.softmax(model(tok.encode(tok.reverse_complement(q))[None]), -1)[0]
              for q in seqs]
    expect = ((torch.stack(one) + torch.stack(rc)) / 2).numpy()
    assert not np.allclose(torch.stack(one).numpy(), expect, atol=1e-4)  # the strands differ
    (tmp_path / "x.csv").write_text("name,sequence\n" + "".join(f"s{i},{q}\n"
                                                                 for i, q in enumerate(seqs)))
    assert cli(["predict", "--model", str(best), str(tmp_path / "x.csv"),
                "--out", str(tmp_path / "p.csv")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    p = np.array([[float(r[f"p_{c}"]) for c in s["classes"]] for r in rows])
    np.testing.assert_allclose(p, expect, atol=1e-5)
    # the test accuracy in the summary is the strand-averaged one
    probs, labels = predict_proba(model, data.test, 64, "cpu", progress=False,
                                  rc_tokenizer=tok)
    assert (probs.argmax(1) == labels).mean() == pytest.approx(s["test_accuracy"])


def test_rc_options_need_dna(tmp_path, capsys):
    assert cli(["classify", "--config", "classify_digits", "--out", str(tmp_path / "x"),
                "data.rc_test=true"]) != 0
    assert "data.rc_test=true is for DNA classification" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_predict_fasta_windows(tmp_path):
    run = tmp_path / "cls"
    assert cli(["classify", "--config", "classify_splice", "--out", str(run), *TINY,
                "--no-baseline"]) == 0
    assert cli(["predict", "--model", str(run / "checkpoints" / "best"), str(LAMBDA_FASTA),
                "--stride", "30000", "--out", str(tmp_path / "p.csv")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    # 48,502 bp in windows of 60 every 30,000 bp: starts 0 and 30,000, then one ending at the end
    assert [(int(r["start"]), int(r["end"])) for r in rows] == [(0, 60), (30000, 30060),
                                                                  (48442, 48502)]


def test_audio_pretrain_finetune_generate(tmp_path):
    pre = tmp_path / "pre"
    assert cli(["pretrain", "--out", str(pre), "data.kind=recordings", "data.seq_len=256",
                "data.val_items=2", "data.test_items=2", "markov_max_order=1", *TINY,
                *TINY_UNET]) == 0
    assert summary(pre)["baselines"]["markov_best_order"] in (0, 1)

    fine = tmp_path / "fine"
    assert cli(["finetune", "--model", str(pre / "checkpoints" / "best"), "--recordings",
                str(LONG_AUDIO_DIR), "--out", str(fine), "data.seq_len=256", "data.val_items=2",
                "data.test_items=2", *TINY[3:]]) == 0
    s = summary(fine)
    assert s["test_bits_per_sample_before"] > 0 and s["test_bits_per_sample_after"] > 0

    gen = tmp_path / "gen"
    assert cli(["generate", "--model", str(fine / "checkpoints" / "last"), "--seconds", "0.02",
                "--prompt", str(next(LONG_AUDIO_DIR.glob("*.flac"))), "--prompt-seconds", "0.01",
                "--out", str(gen)]) == 0
    wave, rate = sf.read(gen / "sample_0.wav")
    assert rate == 8000 and len(wave) == 80 + 160 and np.abs(wave).max() <= 1
    assert (gen / "samples.png").is_file()


def test_finetune_refuses_a_dna_model(tmp_path, capsys):
    run = tmp_path / "pre"
    assert cli(["pretrain", "--out", str(run), f"data.path={LAMBDA_FASTA}", "data.seq_len=64",
                "data.val_items=2", "data.test_items=2", "--no-baselines", *TINY,
                "train.steps=1"]) == 0
    assert cli(["finetune", "--model", str(run / "checkpoints" / "last")]) == 2
    assert "not an audio LM" in capsys.readouterr().err


def test_classifier_save_load_identical_outputs(tmp_path):
    torch.manual_seed(0)
    from mamba_bio_audio.config import MambaConfig
    model = MambaClassifier(MambaConfig(d_model=16, n_layer=1, vocab_size=12, n_classes=3))
    ids = torch.randint(7, 11, (2, 50))
    model.save_pretrained(tmp_path)
    again = MambaClassifier.from_pretrained(tmp_path)
    torch.testing.assert_close(model(ids), again(ids), rtol=0, atol=0)


def digit_clips(folder, per_digit):
    """A folder with the first `per_digit` bundled FSDD clips of digits 0 and 1 (speaker jackson)."""
    import shutil

    from mamba_bio_audio.data import FSDD_DIR
    folder.mkdir()
    for digit in (0, 1):
        for path in sorted(FSDD_DIR.glob(f"{digit}_jackson_*.flac"))[:per_digit]:
            shutil.copy(path, folder / path.name)
    return folder


def test_classify_clips_then_predict_audio(tmp_path):
    clips = digit_clips(tmp_path / "clips", 10)
    run = tmp_path / "cls"
    assert cli(["classify", "--config", "classify_digits_waveform", "--out", str(run),
                f"data.path={clips}", "data.seq_len=400", "data.sample_rate=2000",
                "data.val_fraction=0.2", "data.test_fraction=0.2", *TINY]) == 0
    s = summary(run)
    assert s["classes"] == ["0", "1"] and s["baseline"]["name"].startswith("MFCC")
    clip = sorted(clips.glob("1_*.flac"))[0]
    assert cli(["predict", "--model", str(run / "checkpoints" / "best"), str(clip),
                "--out", str(tmp_path / "p.csv")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert rows and rows[0]["record"] == clip.stem and rows[0]["predicted"] in ("0", "1")
    assert abs(float(rows[0]["p_0"]) + float(rows[0]["p_1"]) - 1) < 1e-5


def test_the_console_script_flushes_denormals_in_every_cpu_thread(tmp_path):
    """The log-mel digits pipeline runs multi-threaded torch ops before its trainer. OpenMP worker
    threads copy the denormal flush when they start, so the console script sets it first: after
    the command, a 2-thread multiply that underflows gives zeros only (with the flush left to the
    trainer, the worker thread's half stayed denormal, ~10x slower)."""
    import subprocess
    import sys

    clips = digit_clips(tmp_path / "clips", 6)
    args = ["classify", "--config", "classify_digits", "--no-baseline", "--out",
            str(tmp_path / "run"), f"data.path={clips}", "data.val_fraction=0.25",
            "data.test_fraction=0.25", *TINY]
    script = ("import sys, torch\n"
              "torch.set_num_threads(2)\n"
              "from mamba_bio_audio.cli import main\n"
              f"code = main({args!r})\n"
              "out = torch.full((1 << 20,), 1e-30) * 1e-10\n"
              "print('RESULT', code, int((out != 0).sum()))\n")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300, env=env)
    assert "RESULT 0 0" in run.stdout, run.stdout[-2000:] + run.stderr[-2000:]


def test_sequence_length_warm_up_on_a_real_genome(tmp_path):
    run = tmp_path / "pre"
    assert cli(["pretrain", "--out", str(run), f"data.path={LAMBDA_FASTA}", "data.seq_len=64",
                "data.val_items=2", "data.test_items=2", "--no-baselines", *TINY,
                "train.steps=4", "train.seq_len_stages=[[0, 32, 8], [2, 64, 4]]"]) == 0
    rows = read_metrics(run / "metrics.csv")
    assert [(r["seq_len"], r["tokens"]) for r in rows] == [(32, 256), (32, 512), (64, 768),
                                                          (64, 1024)]
