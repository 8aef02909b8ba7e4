"""`train.cuda_graph`: the whole training step captured in a CUDA graph (training/cuda_graph.py).

On a GPU (`pytest -m gpu`): a graphed run logs the losses of the eager run step for step (with
micro-batches and a window-length stage that captures again), its checkpoints resume eagerly to
the same losses as an uninterrupted run, a non-finite loss is skipped or stops the run as it
does eagerly, and "auto" trains eagerly where the step cannot be captured. On the CPU: "auto" is
off, true is refused with one line, and the optimizer pieces it needs (a learning rate the
scheduler writes in place; checkpoints with float learning rates).
"""

import os
import signal

import pytest
import torch
from mamba_bio_audio import MambaClassifier, MambaConfig, MambaLM
from mamba_bio_audio.errors import ConfigError
from mamba_bio_audio.pipelines.training.config import TrainConfig
from mamba_bio_audio.pipelines.training.cuda_graph import undone
from mamba_bio_audio.pipelines.training.losses import classifier_loss, lm_loss
from mamba_bio_audio.pipelines.training.metrics import read_metrics
from mamba_bio_audio.pipelines.training.optim import (build_optimizer, portable_state,
                                                      set_capturable)
from mamba_bio_audio.pipelines.training.trainer import (Trainer, TrainingDiverged,
                                                       TrainingInterrupted)



def on_gpu(test):
    return pytest.mark.gpu(pytest.mark.skipif(not torch.cuda.is_available(),
                                              reason="needs CUDA")(test))


class Windows(torch.utils.data.Dataset):
    """Random DNA-like token windows whose length follows set_seq_len; `poison` marks items whose
    loss the test makes NaN; the `interrupt_at`-th item read sends this process SIGINT (a
    captured step runs no Python of the loss, so the data is where a test can act)."""

    def __init__(self, n=64, seq_len=64, poison=(), interrupt_at=0):
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, 8, (n, 256), generator=g)
        self.seq_len, self.poison = seq_len, set(poison)
        self.interrupt_at, self.reads = interrupt_at, 0

    def __len__(self):
        return len(self.ids)

    def set_seq_len(self, seq_len):
        self.seq_len = seq_len

    def __getitem__(self, i):
        self.reads += 1
        if self.reads == self.interrupt_at:
            os.kill(os.getpid(), signal.SIGINT)
        return {"ids": self.ids[i, :self.seq_len], "poison": torch.tensor(i in self.poison)}


def poisoned_lm_loss(model, batch):
    out = lm_loss(model, batch)
    out.loss = out.loss + torch.where(batch["poison"].any(), float("nan"), 0.0)
    return out


def run(tmp_path, name, loss_fn=lm_loss, data=None, resume=None, **train):
    torch.manual_seed(0)
    model = MambaLM(MambaConfig(d_model=32, n_layer=2, vocab_size=8))
    base = dict(steps=8, batch_size=4, lr=3e-3, warmup_steps=2, eval_every=0, log_every=1,
                progress=False, seed=3, precision="bf16")
    trainer = Trainer(model, loss_fn, data or Windows(), None, TrainConfig(**{**base, **train}),
                      tmp_path / name)
    trainer.fit(resume=resume)
    return trainer, [r["train_loss"] for r in read_metrics(tmp_path / name / "metrics.csv")]


@on_gpu
def test_graphed_run_logs_the_losses_of_the_eager_run(tmp_path):
    stages = dict(grad_accum=2, seq_len_stages=[[0, 64], [4, 128]])
    _, eager = run(tmp_path, "eager", cuda_graph=False, **stages)
    graphed, got = run(tmp_path, "graph", cuda_graph=True, **stages)
    assert graphed.graphed.captures == 2  # once per window length
    assert len(got) == len(eager) == 8
    torch.testing.assert_close(got, eager, rtol=1e-4, atol=1e-5)


@on_gpu
def test_a_graphed_checkpoint_resumes_eagerly_like_an_uninterrupted_run(tmp_path):
    _, full = run(tmp_path, "full", cuda_graph=False)
    with pytest.raises(TrainingInterrupted):  # SIGINT while step 5's batch is read
        run(tmp_path, "part", data=Windows(interrupt_at=4 * 4 + 1), cuda_graph=True)
    _, resumed = run(tmp_path, "part", resume=tmp_path / "part", cuda_graph=False)
    assert len(resumed) == len(full) == 8
    torch.testing.assert_close(resumed, full, rtol=1e-4, atol=1e-5)


@on_gpu
def test_a_nonfinite_graphed_step_is_skipped_or_stops_as_eagerly(tmp_path):
    data = Windows(poison=range(8, 12))  # one batch of the first epoch's order holds them
    eager, eager_losses = run(tmp_path, "eager", poisoned_lm_loss, data, skip_nonfinite=True,
                              cuda_graph=False)
    graphed, losses = run(tmp_path, "graph", poisoned_lm_loss, data, skip_nonfinite=True,
                          cuda_graph=True)
    assert graphed.skipped_steps == eager.skipped_steps >= 1
    torch.testing.assert_close(losses, eager_losses, rtol=1e-4, atol=1e-5)  # no update was made
    with pytest.raises(TrainingDiverged, match="became nan"):
        run(tmp_path, "stop", poisoned_lm_loss, data, cuda_graph=True)


class PaddedClips(torch.utils.data.Dataset):
    """Float feature sequences of 8 to 48 real frames padded to 48, with a mask and a label."""

    def __init__(self, n=48):
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(n, 48, 6, generator=g)
        self.lengths = torch.randint(8, 49, (n,), generator=g)
        self.labels = torch.randint(0, 3, (n,), generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        mask = torch.arange(48) < self.lengths[i]
        return {"ids": self.x[i] * mask[:, None], "mask": mask, "label": self.labels[i]}


@on_gpu
def test_a_masked_classifier_step_is_captured_and_trains_as_eagerly(tmp_path):
    def fit(name, cuda_graph):
        torch.manual_seed(0)
        model = MambaClassifier(MambaConfig(d_model=32, n_layer=2, input_dim=6, n_classes=3,
                                            bidirectional=True))
        cfg = TrainConfig(steps=6, batch_size=8, lr=3e-3, warmup_steps=2, eval_every=0,
                          log_every=1, progress=False, seed=3, cuda_graph=cuda_graph)
        trainer = Trainer(model, classifier_loss, PaddedClips(), None, cfg, tmp_path / name)
        trainer.fit()
        return trainer, [r["train_loss"] for r in read_metrics(tmp_path / name / "metrics.csv")]

    _, eager = fit("eager", False)
    graphed, got = fit("graph", True)
    assert graphed.graphed.captures == 1
    torch.testing.assert_close(got, eager, rtol=1e-4, atol=1e-5)


def syncing_lm_loss(model, batch):
    """A loss that reads a value back on the host (which no capture can hold)."""
    out = lm_loss(model, batch)
    out.loss = out.loss * (1.0 + 0.0 * out.loss.item())
    return out


@on_gpu
def test_auto_trains_eagerly_where_the_step_cannot_be_captured(tmp_path, capsys):
    _, eager = run(tmp_path, "eager", cuda_graph=False)
    trainer, got = run(tmp_path, "auto", syncing_lm_loss)  # cuda_graph="auto", the default
    assert trainer.graphed is None
    assert "train.cuda_graph=auto: the training step could not be captured" in capsys.readouterr().err
    torch.testing.assert_close(got, eager, rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match="train.cuda_graph=true: the training step could not"):
        run(tmp_path, "true", syncing_lm_loss, cuda_graph=True)


def test_cuda_graph_is_refused_where_it_cannot_run(tmp_path):
    model = MambaLM(MambaConfig(d_model=16, n_layer=1, vocab_size=8))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"train.cuda_graph=true needs a CUDA GPU; .*cpu"):
            Trainer(model, lm_loss, Windows(), None, TrainConfig(cuda_graph=True), tmp_path)
        assert not tmp_path.joinpath("metrics.csv").exists()
        cpu = Trainer(model, lm_loss, Windows(), None, TrainConfig(), tmp_path)  # "auto"
        assert cpu.graphed is None and not cpu.optimizer.param_groups[0]["capturable"]
    with pytest.raises(ConfigError, match="train.cuda_graph=true runs on one GPU"):
        TrainConfig(cuda_graph=True, fsdp=True).validate()
    with pytest.raises(ConfigError, match="train.cuda_graph must be auto, true or false"):
        TrainConfig(cuda_graph="yes").validate()


def test_a_capturable_learning_rate_is_a_tensor_the_scheduler_overwrites_in_place():
    model = torch.nn.Linear(4, 4)
    cfg = TrainConfig(lr=1e-2, warmup_steps=4, steps=10)
    optimizer, scheduler = build_optimizer(model, cfg, torch.device("cpu"), capturable=True)
    lr = optimizer.param_groups[0]["lr"]
    assert torch.is_tensor(lr) and optimizer.param_groups[0]["capturable"]
    assert float(lr) == pytest.approx(1e-2 / 4)  # the first warm-up step
    optimizer.step()  # no gradients: nothing moves
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] is lr and float(lr) == pytest.approx(2e-2 / 4)
    saved = portable_state(optimizer.state_dict())
    assert all(type(g["lr"]) is float for g in saved["param_groups"])
    plain, _ = build_optimizer(model, TrainConfig(lr=1e-2), torch.device("cpu"))
    plain.load_state_dict(saved)
    set_capturable(plain, False)
    assert plain.param_groups[0]["lr"] == pytest.approx(2e-2 / 4)
    assert not plain.param_groups[0]["capturable"]


def test_undone_puts_weights_moments_and_rng_back_so_later_steps_are_a_fresh_runs():
    def steps(model, optimizer, n):
        for _ in range(n):
            model(torch.randn(3, 4)).square().sum().backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    torch.manual_seed(0)
    fresh = torch.nn.Linear(4, 4)
    warmed = torch.nn.Linear(4, 4)
    warmed.load_state_dict(fresh.state_dict())
    opt_fresh = torch.optim.AdamW(fresh.parameters(), lr=1e-2)
    opt_warmed = torch.optim.AdamW(warmed.parameters(), lr=1e-2)
    rng = torch.get_rng_state()
    with undone(warmed, opt_warmed):
        steps(warmed, opt_warmed, 2)  # makes AdamW's state and moves the weights
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.equal(warmed.weight, fresh.weight)
    assert all(float(v.abs().sum()) == 0 for s in opt_warmed.state.values() for v in s.values())
    torch.manual_seed(1)
    steps(fresh, opt_fresh, 3)
    torch.manual_seed(1)
    steps(warmed, opt_warmed, 3)
    assert torch.equal(warmed.weight, fresh.weight) and torch.equal(warmed.bias, fresh.bias)
    with pytest.raises(RuntimeError, match="boom"), undone(warmed, opt_warmed):
        with torch.no_grad():
            warmed.weight.add_(1.0)
        raise RuntimeError("boom")
    assert torch.equal(warmed.weight, fresh.weight)  # put back when the block raises too
