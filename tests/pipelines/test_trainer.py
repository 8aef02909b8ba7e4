"""The shared training loop on a toy model: loss goes down, exact resume, signals, NaN stop."""

import json
import os
import signal

import pytest
import torch
from mamba_bio_audio.pipelines.training.config import TrainConfig
from mamba_bio_audio.pipelines.training.losses import LossOutput
from mamba_bio_audio.pipelines.training.metrics import read_metrics
from mamba_bio_audio.pipelines.training.optim import param_groups, warmup_cosine
from mamba_bio_audio.pipelines.training.trainer import (Trainer, TrainingDiverged,
                                                       TrainingInterrupted)
from safetensors.torch import save_file


class ToyLM(torch.nn.Module):
    """A bigram LM with a norm and a flagged parameter, enough to exercise the trainer."""

    def __init__(self, vocab=8, d=16):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, d)
        self.norm = torch.nn.LayerNorm(d)
        self.head = torch.nn.Linear(d, vocab)
        self.A_log = torch.nn.Parameter(torch.zeros(d, 4))
        self.A_log._no_weight_decay = True

    def forward(self, ids):
        return self.head(self.norm(self.emb(ids))) + self.A_log.sum() * 0

    def save_pretrained(self, path):
        os.makedirs(path, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()},
                  os.path.join(path, "model.safetensors"))
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump({"vocab": 8}, f)


class PatternData(torch.utils.data.Dataset):
    """Windows of a deterministic periodic sequence; records set_epoch / set_seq_len calls."""

    def __init__(self, n=64, seq_len=12):
        self.n, self.seq_len, self.epochs, self.lens = n, seq_len, [], []

    def __len__(self):
        return self.n

    def set_epoch(self, epoch):
        self.epochs.append(epoch)

    def set_seq_len(self, seq_len):
        self.seq_len = seq_len
        self.lens.append(seq_len)

    def __getitem__(self, i):
        return torch.tensor([(i + 3 * t) % 8 for t in range(self.seq_len)])


def lm_loss(model, ids):
    logits = model(ids[:, :-1])
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                             ids[:, 1:].reshape(-1))
    return LossOutput(loss, ids[:, 1:].numel(), ids.numel())


def cfg(**kw):
    base = dict(steps=12, batch_size=8, lr=5e-2, warmup_steps=2, eval_every=4, log_every=1,
                progress=False, seed=1)
    base.update(kw)
    return TrainConfig(**base)


def test_loss_goes_down_and_outputs_written(tmp_path):
    trainer = Trainer(ToyLM(), lm_loss, PatternData(), PatternData(16), cfg(steps=30), tmp_path)
    result = trainer.fit()
    rows = read_metrics(tmp_path / "metrics.csv")
    assert rows[-1]["train_loss"] < 0.5 * rows[0]["train_loss"]
    assert result.step == 30 and result.tokens_seen == 30 * 8 * 12
    for name in ("loss_curve.png", "checkpoints/last/model.safetensors",
                 "checkpoints/last/trainer_state.pt", "checkpoints/best/model.safetensors"):
        assert (tmp_path / name).is_file(), name
    assert "val_loss" in rows[-1]


def test_resume_after_sigint_matches_uninterrupted_run(tmp_path):
    torch.manual_seed(0)
    full = Trainer(ToyLM(), lm_loss, PatternData(20), PatternData(8), cfg(), tmp_path / "a")
    full.fit()
    expected = [r["train_loss"] for r in read_metrics(tmp_path / "a" / "metrics.csv")]

    calls = {"n": 0}

    def interrupting_loss(model, batch):
        calls["n"] += model.training  # evaluation calls do not count
        if model.training and calls["n"] == 5:
            os.kill(os.getpid(), signal.SIGINT)
        return lm_loss(model, batch)

    torch.manual_seed(0)
    part = Trainer(ToyLM(), interrupting_loss, PatternData(20), PatternData(8), cfg(),
                   tmp_path / "b")
    with pytest.raises(TrainingInterrupted):
        part.fit()
    assert part.step == 5
    torch.manual_seed(123)  # a different init: resume must overwrite it
    resumed = Trainer(ToyLM(), lm_loss, PatternData(20), PatternData(8), cfg(), tmp_path / "b")
    resumed.fit(resume=tmp_path / "b")
    got = [r["train_loss"] for r in read_metrics(tmp_path / "b" / "metrics.csv")]
    assert len(got) == len(expected) == 12
    assert got == pytest.approx(expected, rel=1e-6)


def test_nan_loss_stops_with_clear_error(tmp_path):
    def nan_loss(model, batch):
        out = lm_loss(model, batch)
        out.loss = out.loss * float("nan")
        return out

    trainer = Trainer(ToyLM(), nan_loss, PatternData(), None, cfg(), tmp_path)
    with pytest.raises(TrainingDiverged, match="step 1"):
        trainer.fit()


def test_param_groups_and_schedule():
    model = ToyLM()
    groups = param_groups(model, 0.1)
    decayed = {id(p) for p in groups[0]["params"]}
    assert id(model.emb.weight) in decayed and id(model.head.weight) in decayed
    for p in (model.A_log, model.norm.weight, model.head.bias):
        assert id(p) not in decayed
    assert warmup_cosine(0, 10, 100, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(9, 10, 100, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(100, 10, 100, 0.1) == pytest.approx(0.1)


def test_seq_len_stages_and_grad_accum(tmp_path):
    data = PatternData()
    trainer = Trainer(ToyLM(), lm_loss, data, None,
                      cfg(steps=6, grad_accum=2, seq_len_stages=[[0, 6], [3, 10, 4]]), tmp_path)
    trainer.fit()
    assert data.lens == [6, 10]
    rows = read_metrics(tmp_path / "metrics.csv")
    assert [r["seq_len"] for r in rows] == [6, 6, 6, 10, 10, 10]
    # 3 steps of 2 x 8 windows of 6, then 3 steps of 2 x 4 windows of 10
    assert trainer.tokens_seen == 3 * 2 * 8 * 6 + 3 * 2 * 4 * 10


def test_a_cpu_trainer_flushes_denormals(tmp_path):
    """Decayed scan states underflow into denormal floats, ~100x slower on x86 CPUs: a trainer
    on the CPU makes them zero (species classifier on 2 cores: 41K -> 47K tokens/s)."""
    torch.set_flush_denormal(False)
    tiny = torch.tensor([1e-40])  # a denormal float32
    assert (tiny * 1.0).item() > 0
    Trainer(ToyLM(), lm_loss, PatternData(), None, cfg(device="cpu"), tmp_path)
    assert (tiny * 1.0).item() == 0.0
