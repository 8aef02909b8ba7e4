"""SIGKILL at random moments, resume each time: the final model equals an uninterrupted run's,
bit for bit (CPU), and no checkpoint on disk is ever unreadable.

Each run is the real `mamba-bio-audio pretrain` command on the bundled yeast genome (a tiny model,
a checkpoint after every step, an evaluation every 10 steps so that `best` is rewritten too). The
runs are children of a fork server that has imported torch and the package once, so that a restart
costs the resume, not the imports. The kills land anywhere: during start-up, in a step, in the
middle of a checkpoint write (`.last.tmp-*` folders exist at the kill), during evaluation.

    pytest -m slow tests/pipelines/test_crash_resume.py
"""

from __future__ import annotations

import json
import multiprocessing
import random
import sys
import time

import pytest
import torch
from mamba_bio_audio.pipelines.training.checkpoint import check_checkpoint, find_checkpoint
from mamba_bio_audio.pipelines.training.metrics import read_metrics
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

STEPS = 40
ARGS = ["--no-baselines", "model.d_model=16", "model.n_layer=2", "model.d_state=4",
        "data.seq_len=64", "data.train_items=512", "data.val_items=4", "data.test_items=4",
        f"train.steps={STEPS}", "train.batch_size=4", "train.save_every=1", "train.eval_every=10",
        "train.log_every=1", "train.warmup_steps=5", "train.progress=false"]
MIN_KILLS = 10


def _cli(argv: list[str]) -> None:
    from mamba_bio_audio import cli

    sys.exit(cli.main(argv))


@pytest.fixture(scope="module")
def ctx():
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "mamba_bio_audio.cli", "mamba_bio_audio.models",
                                "mamba_bio_audio.pipelines.pretrain",
                                "mamba_bio_audio.pipelines.common.datasets"])
    return ctx


def start(ctx, argv):
    proc = ctx.Process(target=_cli, args=([str(a) for a in argv],))
    proc.start()
    return proc


def checkpoint_step(run) -> int | None:
    """The step of the checkpoint --resume would use (reading every tensor), None if none yet."""
    try:
        folder = find_checkpoint(run)
    except Exception:  # noqa: BLE001 (no checkpoint yet: CheckpointError)
        return None
    return check_checkpoint(folder)["step"]


def wait_for_progress(proc, run, before: int | None, timeout: float = 120) -> None:
    """Until checkpoints/last holds a step after `before` (or the run ends)."""
    deadline = time.monotonic() + timeout
    while proc.is_alive() and time.monotonic() < deadline:
        try:  # the folder may be swapped at this instant: retry
            if check_checkpoint(run / "checkpoints" / "last")["step"] > (before or 0):
                return
        except Exception:  # noqa: BLE001, S110
            pass
        time.sleep(0.05)


def test_sigkill_at_random_moments_then_resume_equals_uninterrupted_run(ctx, tmp_path):
    ref = tmp_path / "ref"
    t0 = time.perf_counter()
    proc = start(ctx, ["pretrain", "--out", ref, *ARGS])
    proc.join(300)
    assert proc.exitcode == 0
    t_ref = time.perf_counter() - t0
    # One step with its checkpoint, by the training loop's own clock (t_ref also counts start-up
    # and the test set: waits based on it could last many steps and end the run in too few kills)
    t_step = json.loads((ref / "summary.json").read_text())["train_wall_seconds"] / STEPS

    run = tmp_path / "killed"
    rng = random.Random(1234)
    kills, mid_write, steps_at_kill = 0, 0, []
    t_new = None  # time from a start to its first new checkpoint (measured by the even kills)
    for _ in range(MIN_KILLS + 1):
        before = checkpoint_step(run)
        argv = ["pretrain", "--out", run, *(["--resume", run] if before is not None else []),
                *ARGS]
        proc = start(ctx, argv)
        t0 = time.perf_counter()
        if kills < MIN_KILLS:
            # Each run is killed within about 3 steps of its start, so that 10 kills fit in the
            # run however loaded the machine is.
            if kills % 2 == 1:  # anywhere: start-up, loading, the first step or its checkpoint
                proc.join(rng.uniform(0, 1) * t_new)
            else:  # once this run has saved a newer step: somewhere in the step after it
                wait_for_progress(proc, run, before)
                t_new = time.perf_counter() - t0
                proc.join(rng.uniform(0, 1.5) * t_step)
            if proc.is_alive():
                mid_write += any((run / "checkpoints").glob(".*.tmp-*"))
                proc.kill()  # SIGKILL
                proc.join()
                assert proc.exitcode == -9
                kills += 1
                step = checkpoint_step(run)  # raises if a checkpoint is unreadable
                steps_at_kill.append(step)
                for name in ("last", "best"):
                    folder = run / "checkpoints" / name
                    if folder.exists():
                        check_checkpoint(folder)
                continue
        proc.join(300)
        assert proc.exitcode == 0
        assert kills >= MIN_KILLS, f"the run ended after only {kills} kills"
        break
    print(f"{kills} SIGKILLs ({mid_write} during a checkpoint write), checkpoint steps after "
          f"each: {steps_at_kill}; uninterrupted run {t_ref:.1f} s")
    assert kills >= MIN_KILLS
    assert len(set(steps_at_kill)) > 3, "the kills should land at different steps"

    got = load_file(run / "checkpoints" / "last" / "model.safetensors")
    want = load_file(ref / "checkpoints" / "last" / "model.safetensors")
    assert got.keys() == want.keys()
    for key in want:
        assert torch.equal(got[key], want[key]), key
    state, ref_state = (check_checkpoint(r / "checkpoints" / "last") for r in (run, ref))
    assert state["step"] == ref_state["step"] == STEPS
    for p, q in zip(state["optimizer"]["state"].values(), ref_state["optimizer"]["state"].values()):
        assert torch.equal(p["exp_avg"], q["exp_avg"]) and torch.equal(p["exp_avg_sq"],
                                                                       q["exp_avg_sq"])
    losses = [r["train_loss"] for r in read_metrics(run / "metrics.csv")]
    assert losses == [r["train_loss"] for r in read_metrics(ref / "metrics.csv")]
    assert len(losses) == STEPS
    assert not list((run / "checkpoints").glob(".*")), "temp folders left behind"
