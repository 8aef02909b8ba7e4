"""Numerical guards and crash-safe checkpoint folders (fast; the SIGKILL and torchrun runs are in
test_crash_resume.py and test_distributed.py, marked slow)."""

import math

import pytest
import torch
from mamba_bio_audio.pipelines.training.checkpoint import (atomic_save_dir, check_checkpoint,
                                                          find_checkpoint, recover)
from mamba_bio_audio.pipelines.training.config import MAX_SKIPPED_IN_A_ROW
from mamba_bio_audio.pipelines.training.trainer import Trainer, TrainingDiverged
from test_trainer import PatternData, ToyLM, cfg, lm_loss

from mamba_bio_audio.errors import CheckpointError


def poisoned(bad_calls, where="grad"):
    """lm_loss whose training calls number `bad_calls` (1-based) give NaN gradients (finite
    loss) or a NaN loss."""
    calls = {"n": 0}

    def loss_fn(model, batch):
        out = lm_loss(model, batch)
        if model.training:
            calls["n"] += 1
            if calls["n"] in bad_calls or "all" in bad_calls:
                if where == "grad":  # d sqrt(x)/dx at 0 is inf; times 0 gives NaN gradients
                    out.loss = out.loss + torch.sqrt(model.A_log.sum() * 0)
                else:
                    out.loss = out.loss * float("nan")
        return out

    return loss_fn


def test_nonfinite_gradient_stops_with_step_checkpoint_and_hint(tmp_path):
    trainer = Trainer(ToyLM(), poisoned({6}), PatternData(), None, cfg(save_every=2), tmp_path)
    with pytest.raises(TrainingDiverged) as err:
        trainer.fit()
    msg = str(err.value)
    assert "gradient norm became nan at step 6" in msg
    assert f"{tmp_path / 'checkpoints' / 'last'} (step 4)" in msg
    for hint in ("train.lr", "precision fp32", "train.skip_nonfinite=true", "--resume"):
        assert hint in msg
    assert "train.precision=fp32" not in msg  # it is fp32 already
    assert trainer.step == 5
    assert all(torch.isfinite(p).all() for p in trainer.raw_model.parameters())


def test_nonfinite_loss_without_checkpoint_says_so(tmp_path):
    trainer = Trainer(ToyLM(), poisoned({1}, "loss"), PatternData(), None, cfg(), tmp_path)
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 1 .*no checkpoint was "
                       r"written yet") as err:
        trainer.fit()
    assert "--resume" not in str(err.value) and "start again" in str(err.value)


def test_skip_nonfinite_skips_the_batch_and_finishes(tmp_path, capsys):
    """The poisoned batches make no update; the run still makes `steps` optimizer steps."""
    trainer = Trainer(ToyLM(), poisoned({3, 7}), PatternData(), None,
                      cfg(skip_nonfinite=True), tmp_path)
    result = trainer.fit()
    assert result.step == 12 and trainer.skipped_steps == 2
    assert trainer.optimizer.state_dict()["state"][0]["step"] == 12  # 12 updates, not 14
    assert "batch skipped" in capsys.readouterr().err
    assert all(torch.isfinite(p).all() for p in trainer.raw_model.parameters())
    assert math.isfinite(result.history[-1]["train_loss"])


def test_skip_nonfinite_gives_up_after_too_many_in_a_row(tmp_path):
    trainer = Trainer(ToyLM(), poisoned({"all"}), PatternData(), None,
                      cfg(skip_nonfinite=True), tmp_path)
    with pytest.raises(TrainingDiverged, match=f"{MAX_SKIPPED_IN_A_ROW + 1} batches in a row"):
        trainer.fit()


def write_folder(tag):
    def write(tmp):
        (tmp / "model.safetensors").write_text(tag)
        (tmp / "trainer_state.pt").write_text(tag)
        (tmp / "config.json").write_text(tag)
    return write


def test_atomic_save_recovers_after_a_kill_between_the_renames(tmp_path):
    """Killed after `last -> last.old` and before `tmp -> last`: only last.old is complete. The
    next resume finds it, and the next write must not delete it before the new one is in place."""
    ckpts = tmp_path / "checkpoints"
    atomic_save_dir(ckpts / "last", write_folder("v1"))
    (ckpts / "last").rename(ckpts / "last.old")  # the state a kill between the renames leaves
    (ckpts / ".last.tmp-dead").mkdir()  # and a temp folder of a write killed half-way
    (ckpts / ".last.tmp-dead" / "model.safetensors").write_text("half")
    assert find_checkpoint(tmp_path) == ckpts / "last.old"
    atomic_save_dir(ckpts / "last", write_folder("v2"))
    assert sorted(p.name for p in ckpts.iterdir()) == ["last"]
    assert (ckpts / "last" / "config.json").read_text() == "v2"

    (ckpts / "last").rename(ckpts / "last.old")
    recover(ckpts / "last")  # what the next write does first: put last.old back
    assert sorted(p.name for p in ckpts.iterdir()) == ["last"]
    assert (ckpts / "last" / "config.json").read_text() == "v2"


def test_failed_write_keeps_the_previous_checkpoint(tmp_path):
    final = tmp_path / "last"
    atomic_save_dir(final, write_folder("v1"))

    def failing(tmp):
        (tmp / "model.safetensors").write_text("partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(CheckpointError, match="No space left on device.*intact"):
        atomic_save_dir(final, failing)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
    assert (final / "model.safetensors").read_text() == "v1"


def test_check_checkpoint_reads_every_tensor(tmp_path):
    trainer = Trainer(ToyLM(), lm_loss, PatternData(), None, cfg(steps=2), tmp_path)
    trainer.fit()
    last = tmp_path / "checkpoints" / "last"
    assert check_checkpoint(last)["step"] == 2
    weights = last / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-8])  # the last tensor loses its end
    with pytest.raises(CheckpointError, match="model.safetensors is unreadable"):
        check_checkpoint(last)


def test_train_seed_fixes_the_initial_weights(tmp_path):
    """The model is built after `train.seed` is applied: two runs from different global RNG states
    end with the same weights (torch seeds each new process at random otherwise)."""
    from safetensors.torch import load_file

    from mamba_bio_audio import cli

    tiny = ["--no-baselines", "model.d_model=16", "model.n_layer=1", "model.d_state=4",
            "data.seq_len=64", "data.val_items=2", "data.test_items=2", "train.steps=1",
            "train.batch_size=2", "train.eval_every=0", "train.progress=false"]
    weights = []
    for run, seed in (("a", 1), ("b", 2)):
        torch.manual_seed(seed)
        assert cli.main(["pretrain", "--out", str(tmp_path / run), *tiny]) == 0
        weights.append(load_file(tmp_path / run / "checkpoints" / "last" / "model.safetensors"))
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_only_rank_zero_is_main_before_the_process_group_exists(monkeypatch):
    from mamba_bio_audio.pipelines.training.distributed import is_main_process

    monkeypatch.setenv("RANK", "1")
    assert not is_main_process()
    monkeypatch.setenv("RANK", "0")
    assert is_main_process()
