"""model.rc_equivariant=true through the commands: pretrain an RC LM, generate from it, start a
classifier from it (`classify --init`) and from a plain LM, predict: the same probabilities for a
sequence and its reverse complement, and no test call flips."""

import csv
import json

import numpy as np

from mamba_bio_audio.cli import main as cli
from mamba_bio_audio.data import DNATokenizer
from mamba_bio_audio.models import MambaClassifier, MambaLM

TINY = ["model.d_model=8", "model.n_layer=1", "model.d_state=4", "train.steps=2",
        "train.eval_every=2", "train.batch_size=4", "train.warmup_steps=1", "train.progress=false"]
SMALL_LM = ["data.seq_len=64", "data.val_items=4", "data.test_items=4", "--no-baselines"]


def test_rc_lm_generate_classify_predict(tmp_path):
    lm = tmp_path / "lm"
    assert cli(["pretrain", "--out", str(lm), *TINY, *SMALL_LM, "model.rc_equivariant=true"]) == 0
    best = lm / "checkpoints" / "best"
    assert MambaLM.from_pretrained(best).config.rc_equivariant
    assert cli(["generate", "--model", str(best), "--length", "12",
                "--out", str(tmp_path / "gen")]) == 0
    assert (tmp_path / "gen" / "generated.fa").is_file()

    cls = tmp_path / "cls"
    assert cli(["classify", "--config", "classify_splice", "--init", str(best), "--out", str(cls),
                *TINY, "--no-baseline"]) == 0
    s = json.loads((cls / "summary.json").read_text())
    assert s["rc_equivariant"] is True and s["test_rc_flip_fraction"] == 0

    tok = DNATokenizer()
    seqs = ["ACGTTGCAAGGCTTAGCCATGA", "GGGATTACAGATTACACCC"]
    both = seqs + [tok.reverse_complement(q) for q in seqs]
    (tmp_path / "x.csv").write_text("sequence\n" + "\n".join(both) + "\n")
    assert cli(["predict", "--model", str(cls / "checkpoints" / "best"), str(tmp_path / "x.csv"),
                "--out", str(tmp_path / "p.csv")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    p = np.array([[float(r[f"p_{c}"]) for c in s["classes"]] for r in rows])
    np.testing.assert_allclose(p[2:], p[:2], atol=1e-6)


def test_classify_init_plain_lm_becomes_rc(tmp_path):
    """A plain LM's weights fit an RC-equivariant classifier of the same size."""
    lm = tmp_path / "lm"
    assert cli(["pretrain", "--out", str(lm), *TINY, *SMALL_LM]) == 0
    cls = tmp_path / "cls"
    assert cli(["classify", "--config", "classify_splice", "--init",
                str(lm / "checkpoints" / "best"), "--out", str(cls), *TINY, "--no-baseline",
                "model.rc_equivariant=true"]) == 0
    assert MambaClassifier.from_pretrained(cls / "checkpoints" / "best").config.rc_equivariant
    assert json.loads((cls / "summary.json").read_text())["test_rc_flip_fraction"] == 0


def test_rc_equivariant_refused_off_dna(tmp_path, capsys):
    assert cli(["classify", "--config", "classify_digits", "--out", str(tmp_path / "x"),
                "model.rc_equivariant=true"]) == 2
    assert "model.rc_equivariant=true is for DNA" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
