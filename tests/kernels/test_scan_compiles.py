"""The Triton scan kernels compile for an H100/H200 (sm_90) on this CPU machine, with the ptxas that
Triton's wheel ships: the interpreter, which runs every other kernel test here, never meets the
real compiler (inline assembly, constexpr globals, layouts)."""

import os
import subprocess
import sys

import pytest
from mamba_bio_audio.kernels.selective_scan import triton_scan


@pytest.mark.parametrize("layout, block_d, extra", [
    ("channels-last", "32", []),
    # the backward of the plans with few programs (1 x 256 x 16K): no register limit, the walk
    # back unrolled by 2 (BWD_WALK_UNROLL)
    ("channels-last", "32", ["--maxnreg", "0", "--walk-unroll", "2"]),
    ("time", "16", []),
], ids=["channels-last", "channels-last-unlimited", "time"])
def test_scan_kernels_compile_for_sm90_without_spills_in_loops(layout, block_d, extra):
    """At the tiles the plan picks for each input layout (time-contiguous: the staged kernels). A
    spill outside the loops runs once a program (a backward with a prefetch in its chunk loop kept
    6 epilogue pointers in local memory at 168 registers, kernel_tuning_notes.md #26); none may
    sit in a loop."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-m", "mamba_bio_audio.kernels.selective_scan.compile_check",
                          "--block-d", block_d, "--layout", layout, "--waits", *extra],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line.split("|")[1:-1] for line in out.stdout.splitlines()[2:]]
    assert [r[1].strip() for r in rows] == ["forward", "backward", "chunked backward", "segment ends",
                                            "segment adjoints", "segment carry", "partial sums"]
    for inputs, name, _, registers, spills, loop_spills, loops, waits in rows:
        assert inputs.strip() == layout
        # --waits: per loop, the fewest / median instructions from a load to its first wait
        assert len(waits.split(",")) == len(loops.split(",")), (name, waits)
        assert all(w.strip() == "-" or 0 < int(w.split("/")[0]) <= int(w.split("/")[1])
                   for w in waits.split(",")), (name, waits)
        if name.strip() != "chunked backward":  # not a default: its spills are being measured (#37)
            assert int(loop_spills) == 0, f"{name}: {loop_spills} spill loads/stores in loops"
            assert int(spills) <= 64, f"{name}: {spills} bytes of register spills"
        assert int(registers) <= 255 and loops.strip() != "-", name
        if name.strip() == "backward" and layout == "channels-last" and not extra:  # BWD_MAXNREG
            assert int(registers) <= triton_scan.BWD_MAXNREG, registers


@pytest.mark.parametrize("args, message", [
    (["--sub-chunk", "3"], "--sub-chunk: expected a power of two from 1 to 32, got 3"),
    (["--maxnreg", "7"], "--maxnreg: expected 0 (no limit) or a register count from 32 to 255, got 7"),
])
def test_compile_check_refuses_bad_options(args, message):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-m", "mamba_bio_audio.kernels.selective_scan.compile_check",
                          *args], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert message in out.stderr


def test_compile_check_refuses_the_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1")
    out = subprocess.run([sys.executable, "-m", "mamba_bio_audio.kernels.selective_scan.compile_check"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0
    assert "TRITON_INTERPRET" in out.stderr
