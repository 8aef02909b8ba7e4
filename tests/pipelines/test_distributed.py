"""Training under `torchrun --nproc_per_node 2` on the CPU (gloo).

- the losses equal those of one process with the same global batch (within fp32 rounding);
- only rank 0 writes (Python audit events of every rank, see rank_probe.py);
- the ranks fetch disjoint windows, and together the very windows the single process fetched;
- with train.fsdp=true (FSDP2 on the CPU), the same losses and weights, through a stop and a
  resume;
- a torchrun job stopped by SIGTERM (all ranks after the same step), then killed by SIGKILL
  (torchrun and its ranks), resumes under torchrun each time and ends with the weights of the
  uninterrupted torchrun job.

    pytest -m slow tests/pipelines/test_distributed.py
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mamba_bio_audio.pipelines.training.checkpoint import check_checkpoint
from mamba_bio_audio.pipelines.training.metrics import read_metrics
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

PROBE = Path(__file__).with_name("rank_probe.py")
STEPS = 20
GLOBAL_BATCH = 8
ARGS = ["--no-baselines", "model.d_model=16", "model.n_layer=2", "model.d_state=4",
        "data.seq_len=64", "data.train_items=512", "data.val_items=8", "data.test_items=8",
        f"train.steps={STEPS}", "train.eval_every=10", "train.log_every=1",
        "train.warmup_steps=4", "train.save_every=1", "train.progress=false"]
TORCHRUN = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))


def env_for(watch: Path, probe_out: Path) -> dict:
    env = dict(os.environ, PROBE_WATCH=str(watch), PROBE_OUT=str(probe_out),
               OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("TRITON_INTERPRET", None)
    return env


def command(nproc: int, out: Path, *extra) -> list[str]:
    """extra: options (--resume DIR) and key=value overrides, put where argparse wants them."""
    options = [a for a in extra if "=" not in a]
    overrides = [a for a in extra if "=" in a]
    per_rank = [f"train.batch_size={GLOBAL_BATCH // nproc}"]
    args = ["pretrain", "--out", str(out), *options, *ARGS, *per_rank, *overrides]
    if nproc == 1:
        return [sys.executable, str(PROBE), *args]
    return [TORCHRUN, "--standalone", f"--nproc_per_node={nproc}", str(PROBE), *args]


def launch(nproc: int, out: Path, probe_out: Path, *extra) -> subprocess.Popen:
    return subprocess.Popen(command(nproc, out, *extra), env=env_for(out, probe_out),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = 240) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def descendants(pid: int) -> list[int]:
    """All processes below `pid` (from /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            found += [child, *descendants(child)]
    return found


def wait_gone(pids: list[int], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in pids if Path(f"/proc/{p}").exists()
                 and "zombie" not in Path(f"/proc/{p}/status").read_text()]
        if not alive:
            return
        time.sleep(0.05)
    raise AssertionError(f"still running after SIGKILL: {alive}")


def probes(folder: Path) -> dict[int, dict]:
    return {int(p.stem[4:]): json.loads(p.read_text()) for p in folder.glob("rank*.json")}


def train_items(record: dict) -> set:
    return {(e, i) for split, e, i in record["items"] if split == "train"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One process (batch 8) and two ranks (batch 4 each), run at the same time."""
    d = tmp_path_factory.mktemp("dist")
    one = launch(1, d / "one", d / "probe_one")
    two = launch(2, d / "two", d / "probe_two")
    finish(one)
    finish(two)
    return d


def test_two_ranks_log_the_losses_of_one_process(runs):
    one = read_metrics(runs / "one" / "metrics.csv")
    two = read_metrics(runs / "two" / "metrics.csv")
    assert len(one) == len(two) == STEPS
    for a, b in zip(one, two):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=2e-5, abs=1e-6), (a, b)
    val_one = [r["val_loss"] for r in one if "val_loss" in r]
    val_two = [r["val_loss"] for r in two if "val_loss" in r]
    assert len(val_one) == 2 and val_two == pytest.approx(val_one, rel=2e-5)
    w1 = load_file(runs / "one" / "checkpoints" / "last" / "model.safetensors")
    w2 = load_file(runs / "two" / "checkpoints" / "last" / "model.safetensors")
    for key in w1:
        torch.testing.assert_close(w2[key], w1[key], rtol=1e-4, atol=1e-5)


def test_only_rank_zero_writes(runs):
    rec = probes(runs / "probe_two")
    assert sorted(rec) == [0, 1]
    assert rec[1]["writes"] == []
    written = {Path(p).name for _, p in rec[0]["writes"]}
    assert {"config.yaml", "metrics.csv", "summary.json"} <= {n.split(".tmp")[0].lstrip(".")
                                                               for n in written} | written


def test_ranks_see_disjoint_shards_of_the_same_data(runs):
    rec = probes(runs / "probe_two")
    r0, r1 = train_items(rec[0]), train_items(rec[1])
    assert len(r0) == len(r1) == STEPS * GLOBAL_BATCH // 2
    assert not r0 & r1
    assert r0 | r1 == train_items(probes(runs / "probe_one")[0])
    for split in ("val", "test"):  # evaluation is sharded too
        a, b = ({i for s, _, i in rec[r]["items"] if s == split} for r in (0, 1))
        assert a and b and not a & b, split


def wait_for_step(proc, run: Path, at_least: int) -> int:
    """Poll checkpoints/last until it holds step >= at_least (the job must still be running)."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        last = run / "checkpoints" / "last"
        try:
            step = check_checkpoint(last)["step"]
        except Exception:  # noqa: BLE001 (none yet, or being swapped at this instant: retry)
            step = -1
        if step >= at_least:
            return step
        time.sleep(0.1)
    raise AssertionError(f"the job ended (exit {proc.poll()}) before step {at_least}")


def test_torchrun_job_stopped_killed_and_resumed_under_torchrun(runs, tmp_path):
    """SIGTERM to torchrun: every rank stops after the same step and rank 0 saves it. Resumed
    under torchrun, then SIGKILLed (torchrun and both ranks), then resumed to the end: the
    weights and losses equal the uninterrupted torchrun job's, bit for bit."""
    run = tmp_path / "stopped"
    proc = launch(2, run, tmp_path / "probe_a")
    wait_for_step(proc, run, 3)
    proc.send_signal(signal.SIGTERM)  # torchrun forwards it to the ranks
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0
    stopped = check_checkpoint(run / "checkpoints" / "last")["step"]
    assert f"SIGTERM: saved a checkpoint at step {stopped}" in out, out[-3000:]
    assert 3 <= stopped < STEPS

    proc = launch(2, run, tmp_path / "probe_b", "--resume", str(run))
    wait_for_step(proc, run, stopped + 3)
    tree = [proc.pid, *descendants(proc.pid)]
    assert len(tree) >= 3, tree  # torchrun and its two ranks
    for pid in tree:  # torchrun and both ranks at once (ranks run in sessions of their own)
        os.kill(pid, signal.SIGKILL)
    proc.communicate()
    wait_gone(tree)
    killed = check_checkpoint(run / "checkpoints" / "last")["step"]
    assert stopped < killed < STEPS
    finish(launch(2, run, tmp_path / "probe_c", "--resume", str(run)))

    got = load_file(run / "checkpoints" / "last" / "model.safetensors")
    want = load_file(runs / "two" / "checkpoints" / "last" / "model.safetensors")
    for key in want:
        assert torch.equal(got[key], want[key]), key
    losses = [r["train_loss"] for r in read_metrics(run / "metrics.csv")]
    assert losses == [r["train_loss"] for r in read_metrics(runs / "two" / "metrics.csv")]


def test_fsdp_job_stopped_and_resumed_matches_ddp(runs, tmp_path):
    """train.fsdp=true (FSDP2, one unit per Mamba block, gloo): SIGTERM at step >= 3, resume
    under torchrun; the losses and the gathered final weights equal the DDP job's within fp32
    rounding, the checkpoint is an ordinary model folder, only rank 0 writes, and every rank has
    freed the model when the command returns."""
    from mamba_bio_audio.models import MambaLM

    run = tmp_path / "fsdp"
    proc = launch(2, run, tmp_path / "probe_a", "train.fsdp=true")
    wait_for_step(proc, run, 3)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    stopped = check_checkpoint(run / "checkpoints" / "last")["step"]
    assert f"SIGTERM: saved a checkpoint at step {stopped}" in out, out[-3000:]
    assert check_checkpoint(run / "checkpoints" / "last")["fsdp"] is True
    finish(launch(2, run, tmp_path / "probe_b", "--resume", str(run)))

    fsdp = read_metrics(run / "metrics.csv")
    ddp = read_metrics(runs / "two" / "metrics.csv")
    assert [r["train_loss"] for r in fsdp] == pytest.approx([r["train_loss"] for r in ddp],
                                                            rel=2e-5)
    a = MambaLM.from_pretrained(runs / "two" / "checkpoints" / "last").state_dict()
    b = MambaLM.from_pretrained(run / "checkpoints" / "last").state_dict()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5)
    for probe in ("probe_a", "probe_b"):
        assert probes(tmp_path / probe)[1]["writes"] == []
    # the command freed its FSDP model (and with it the gloo groups) before returning: left to
    # the interpreter's exit, a rank could abort with SIGABRT after a successful job
    assert [r["modules_alive"] for r in probes(tmp_path / "probe_b").values()] == [0, 0]
