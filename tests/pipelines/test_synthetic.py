"""`mamba-bio-audio synthetic`: configs, the loss, chunked evaluation past the training length,
a tiny run whose loss goes down, and the whole command with its table, plot and summary.json."""

import argparse
import json
import math

import numpy as np
import pytest
import torch

from mamba_bio_audio.config import MambaConfig
from mamba_bio_audio.data.synthetic import IGNORE, SyntheticTask
from mamba_bio_audio.errors import ConfigError
from mamba_bio_audio.models import MambaLM
from mamba_bio_audio.pipelines import synthetic
from mamba_bio_audio.pipelines.common.run_config import builtin_configs, first_comment
from mamba_bio_audio.pipelines.training.losses import answer_loss
from mamba_bio_audio.pipelines.training.trainer import Trainer


def tiny_model(**kw) -> MambaLM:
    torch.manual_seed(0)
    return MambaLM(MambaConfig(**{"d_model": 16, "n_layer": 1, "d_state": 4, "vocab_size": 16,
                                  **kw}))


class StreamingInductionOracle(torch.nn.Module):
    """Solves induction heads exactly, one position at a time, from a recurrent state only.

    Its state (the value after the trigger) must survive being carried between chunks, which is
    what `evaluate_length` relies on at lengths far beyond training.
    """

    def __init__(self, vocab_size: int = 16):
        super().__init__()
        self.V = vocab_size

    def allocate_state(self, batch_size, device=None):
        return {"prev": torch.full((batch_size,), -1), "value": torch.zeros(batch_size, dtype=torch.long),
                "seen": torch.zeros(batch_size, dtype=torch.bool)}

    def forward(self, ids, state):
        trigger, out = self.V - 1, []
        for t in range(ids.shape[1]):
            tok = ids[:, t]
            fresh = (state["prev"] == trigger) & ~state["seen"]
            state["value"] = torch.where(fresh, tok, state["value"])
            state["seen"] |= fresh
            state["prev"] = tok
            out.append(torch.nn.functional.one_hot(state["value"], self.V).float())
        return torch.stack(out, 1)  # (b, c, V)


def test_builtin_configs_load_and_name_their_command():
    names = [n for n in builtin_configs() if n.startswith("synthetic_")]
    assert {"synthetic_selective_copy", "synthetic_induction_heads",
            "synthetic_selective_copy_gpu", "synthetic_induction_heads_gpu"} <= set(names)
    for name in names:
        cfg = synthetic.load_synthetic_config(name)
        assert cfg.models == ["selective", "lti"]
        assert first_comment(builtin_configs()[name]) == \
            f"mamba-bio-audio synthetic {cfg.task} --config {name}"
    gpu = synthetic.load_synthetic_config("synthetic_induction_heads_gpu")
    assert gpu.data.seq_len == 256 and max(gpu.data.test_lengths) == 2 ** 20
    assert synthetic.load_synthetic_config("synthetic_selective_copy_gpu").data.seq_len == 4096


def test_selective_override_keeps_one_variant_and_bad_values_are_named():
    cfg = synthetic.load_synthetic_config("synthetic_selective_copy", ["model.selective=false"])
    assert cfg.models == ["lti"] and cfg.model.selective is False
    with pytest.raises(ConfigError, match="models"):
        synthetic.load_synthetic_config("synthetic_selective_copy", ["models=[s4]"])
    with pytest.raises(ConfigError, match="vocab_size"):
        synthetic.load_synthetic_config("synthetic_selective_copy", ["data.vocab_size=12"])
    with pytest.raises(ConfigError, match="n_tokens"):
        synthetic.load_synthetic_config("synthetic_selective_copy", ["data.n_tokens=300"])


def test_answer_loss_scores_answer_positions_only():
    model = tiny_model()
    batch = {k: torch.stack([SyntheticTask("selective-copy", 2, 20, n_tokens=3)[i][k]
                             for i in range(2)]) for k in ("ids", "targets")}
    out = answer_loss(model, batch)
    assert out.weight == 6 and out.tokens == 2 * 23
    logits = model(batch["ids"])
    mask = batch["targets"] != IGNORE
    expected = torch.nn.functional.cross_entropy(logits[mask], batch["targets"][mask])
    torch.testing.assert_close(out.loss, expected)
    assert out.sums["accuracy"] == float((logits[mask].argmax(-1) == batch["targets"][mask]).sum())


def test_state_passing_equals_training_on_the_previous_sequence_then_this_one():
    """Reference: the model run on [sequence i - 2, sequence i - 1, sequence i] concatenated,
    scored on the last third only; state_passing=2 must give the same loss (the prefix without
    gradient), and the plain loss in eval mode."""
    model = tiny_model()
    task = SyntheticTask("induction-heads", 3, 40, seed=1)
    batch = {k: torch.stack([task[i][k] for i in range(3)]) for k in ("ids", "targets")}
    out = answer_loss(model.train(), batch, state_passing=2)
    out.loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    with torch.no_grad():
        ids = torch.cat([batch["ids"].roll(2, 0), batch["ids"].roll(1, 0), batch["ids"]], 1)
        logits = model(ids)[:, 2 * batch["ids"].shape[1]:]
    mask = batch["targets"] != IGNORE
    expected = torch.nn.functional.cross_entropy(logits[mask], batch["targets"][mask])
    torch.testing.assert_close(out.loss.detach(), expected, rtol=1e-5, atol=1e-6)
    plain = answer_loss(model.eval(), batch)
    torch.testing.assert_close(answer_loss(model, batch, state_passing=2).loss,
                               plain.loss)
    assert not torch.allclose(plain.loss, out.loss.detach())


def test_chunked_evaluation_carries_the_state_far_past_the_training_length():
    data = SyntheticTask("induction-heads", 6, 3000, seed=4)
    res = synthetic.evaluate_length(StreamingInductionOracle(), data, batch_size=4, chunk=256,
                                    device="cpu")
    assert res == {"token_accuracy": 1.0, "exact_match": 1.0, "sequences": 6}


def test_chunked_evaluation_equals_one_pass_for_a_mamba():
    model = tiny_model(n_layer=2).eval()
    data = SyntheticTask("selective-copy", 5, 300, n_tokens=8, seed=1)
    whole = synthetic.evaluate_length(model, data, 5, 10_000, "cpu")
    chunked = synthetic.evaluate_length(model, data, 2, 77, "cpu")
    assert whole == chunked
    ids = torch.stack([data[i]["ids"] for i in range(2)])
    state = model.allocate_state(2)
    pieces = torch.cat([model(ids[:, s:s + 77], state) for s in range(0, ids.shape[1], 77)], 1)
    torch.testing.assert_close(pieces, model(ids), rtol=1e-4, atol=1e-4)


def test_tiny_training_run_learns_to_copy(tmp_path):
    """Copying 2 tokens out of 8 positions: the loss falls well below guessing (ln 4)."""
    cfg = synthetic.load_synthetic_config("synthetic_selective_copy", [
        "model.d_model=32", "model.n_layer=1", "model.d_state=8", "model.vocab_size=6",
        "data.vocab_size=6", "data.seq_len=8", "data.n_tokens=2", "data.val_items=64",
        "train.steps=80", "train.batch_size=16", "train.lr=1e-2", "train.warmup_steps=5",
        "train.eval_every=80", "train.log_every=1", "train.progress=false",
        "train.seq_len_stages=[]", "train.min_lr_ratio=1.0", "train.weight_decay=0.0"])
    d = cfg.data
    model = tiny_model(d_model=32, d_state=8, vocab_size=6)
    train = SyntheticTask(cfg.task, 10_000, d.seq_len, d.vocab_size, d.n_tokens, seed=0)
    val = SyntheticTask(cfg.task, d.val_items, d.seq_len, d.vocab_size, d.n_tokens, seed=1)
    result = Trainer(model, answer_loss, train, val, cfg.train, tmp_path).fit()
    losses = [r["train_loss"] for r in result.history if "train_loss" in r]
    assert losses[0] > 0.9 * math.log(6)
    assert np.mean(losses[-10:]) < 0.65 * math.log(4)
    assert result.history[-1]["val_accuracy"] > 0.5  # chance is 0.25


def test_command_writes_table_plot_and_summary(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    synthetic.add_arguments(parser)
    out = tmp_path / "run"
    args = parser.parse_intermixed_args([
        "induction-heads", "--out", str(out), "model.d_model=16", "model.n_layer=1",
        "model.d_state=4", "data.seq_len=32", "data.val_items=8", "data.val_seq_len=0",
        "data.test_lengths=[32,200]", "data.test_items=4", "data.eval_chunk=64", "train.steps=3", "train.batch_size=4",
        "train.eval_every=3", "train.progress=false", "train.seq_len_stages=[]"])
    assert synthetic.main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "induction-heads" and summary["metric"] == "exact_match"
    assert set(summary["accuracy"]) == {"selective", "lti"}
    for per_length in summary["accuracy"].values():
        assert set(per_length) == {"32", "200"}
        assert all(0 <= v <= 1 for v in per_length.values())
    assert summary["models"]["lti"]["selective"] is False
    assert (out / "accuracy_by_length.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "| selective |" in printed and "| lti |" in printed and "L=200" in printed
    assert printed.split("\n\n")[1].strip() in (out / "results.md").read_text()


def test_init_continues_from_an_earlier_run_with_state_passing(tmp_path, capsys):
    """init=RUN starts each variant from RUN's best weights: with zero steps of training, the
    continued run reports exactly the accuracies of the first; a missing variant is named."""
    parser = argparse.ArgumentParser()
    synthetic.add_arguments(parser)
    tiny = ["model.d_model=16", "model.n_layer=1", "model.d_state=4", "data.seq_len=32",
            "data.val_items=8", "data.val_seq_len=0", "data.test_lengths=[32,200]",
            "data.test_items=8",
            "data.eval_chunk=64", "train.batch_size=4", "train.progress=false",
            "train.seq_len_stages=[]", "model.selective=true"]
    first = tmp_path / "first"
    assert synthetic.main(parser.parse_intermixed_args(["induction-heads", "--out", str(first), *tiny,
                                             "train.steps=6", "train.eval_every=3"])) == 0
    again = tmp_path / "again"
    assert synthetic.main(parser.parse_intermixed_args([
        "induction-heads", "--out", str(again), *tiny, f"init={first}", "state_passing=2",
        "train.steps=2", "train.eval_every=2", "train.lr=1e-12"])) == 0
    a, b = (json.loads((d / "summary.json").read_text())["by_length"] for d in (first, again))
    assert a == b  # lr 1e-12: the same predictions on the same test sequences
    w1, w2 = (MambaLM.from_pretrained(d / "selective" / "checkpoints" / "best").state_dict()
              for d in (first, again))
    fresh = tiny_model(d_state=4).state_dict()  # what a run without init starts from
    assert all(torch.allclose(w1[k], w2[k], atol=1e-8) for k in w1)
    assert not all(torch.allclose(w1[k], fresh[k], atol=1e-4) for k in w1)
    with pytest.raises(ConfigError, match="no checkpoint"):
        synthetic.main(parser.parse_intermixed_args(["induction-heads", "--out", str(tmp_path / "x"),
                                          *tiny[:-1], "model.selective=false",
                                          f"init={first}", "train.steps=1"]))


def test_command_rejects_a_config_of_the_other_task(tmp_path):
    parser = argparse.ArgumentParser()
    synthetic.add_arguments(parser)
    args = parser.parse_intermixed_args(["induction-heads", "--config", "synthetic_selective_copy",
                              "--out", str(tmp_path)])
    with pytest.raises(ConfigError, match="selective-copy"):
        synthetic.main(args)


def test_checkpoints_are_chosen_on_the_validation_length(tmp_path):
    """data.val_seq_len: training stays at data.seq_len, and the best checkpoint's recorded
    validation loss is its answer loss on held-out sequences of val_seq_len tokens."""
    parser = argparse.ArgumentParser()
    synthetic.add_arguments(parser)
    out = tmp_path / "run"
    assert synthetic.main(parser.parse_intermixed_args([
        "induction-heads", "--out", str(out), "model.d_model=16", "model.n_layer=1",
        "model.d_state=4", "data.seq_len=32", "data.val_items=8", "data.val_seq_len=96",
        "data.test_lengths=[32]", "data.test_items=4", "train.steps=4", "train.batch_size=4",
        "train.eval_every=2", "train.progress=false", "train.seq_len_stages=[]",
        "model.selective=true"])) == 0
    best = json.loads((out / "summary.json").read_text())["models"]["selective"]["best_val_loss"]
    model = MambaLM.from_pretrained(out / "selective" / "checkpoints" / "best").eval()
    val = SyntheticTask("induction-heads", 8, 96, 16, seed=1)  # data.seed + 1
    batch = {k: torch.stack([val[i][k] for i in range(8)]) for k in ("ids", "targets")}
    assert batch["ids"].shape == (8, 96)
    with torch.no_grad():
        assert answer_loss(model, batch).loss.item() == pytest.approx(best, rel=1e-5)
    for bad in ("-1", "2"):
        with pytest.raises(ConfigError, match="val_seq_len" if bad == "-1" else "seq_len=2"):
            synthetic.load_synthetic_config("synthetic_induction_heads",
                                            [f"data.val_seq_len={bad}"])
