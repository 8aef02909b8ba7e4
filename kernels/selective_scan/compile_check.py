"""Compile the Triton scan kernels for a GPU on a machine without one, and count their instructions.

The CPU interpreter (TRITON_INTERPRET=1, how CI runs the kernels) checks what the kernels compute
but not that they compile: inline assembly, constexpr globals and layouts only meet the real
compiler on a GPU. Triton's wheel ships ptxas and nvdisasm, so the whole pipeline down to SASS
runs here. For each kernel this prints the registers, spills (bytes, and the spill loads and
stores inside loops: a spill outside them runs once a program) and the instructions in its step
loops (per loop iteration, i.e. per time step), which is how docs/kernel_tuning_notes.md #8 read
the kernels without a GPU:

    python -m mamba_bio_audio.kernels.selective_scan.compile_check [--arch 90] [--block-d 16 32]
        [--sub-chunk 8] [--maxnreg 0] [--walk-unroll 2] [--backward-warps 2] [--waits]

--waits adds where each loop's global loads really block: the instructions from a load to the
first one that waits on its scoreboard barrier (read from the SASS's control words).

Run without TRITON_INTERPRET (the interpreter replaces the kernels by Python functions).
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from . import triton_chunked, triton_recurrent, triton_reduce, triton_segments
from .triton_scan import (BWD_FOLDED_SUMS, BWD_MAXNREG, BWD_MAXNREG_BLOCK_D, BWD_SUB_CHUNK,
                          BWD_WALK_UNROLL, CHUNKED_CHUNK, Plan, _folds, _lane_folds)

BF16_ARGS = {"u_ptr", "delta_ptr", "B_ptr", "C_ptr", "z_ptr", "y_ptr", "ypre_ptr", "dout_ptr", "du_ptr",
             "ddelta_ptr", "dz_ptr", "dBC_out_ptr"}
# unit strides of each input layout: channels-last u, delta, z, y and their gradients (what the
# models pass on a GPU; the kernels read them step by step) or time-contiguous ones (mamba_ssm's
# convention; the kernels stage each chunk, STAGED), B and C with the state axis contiguous
UNIT_STRIDES = {
    "channels-last": {"s_u_d", "s_dt_d", "s_z_d", "s_y_d", "s_do_d", "s_io_d", "s_B_n", "s_C_n",
                      "s_dB_n", "s_seq_l"},
    "time": {"s_u_l", "s_dt_l", "s_z_l", "s_y_l", "s_do_l", "s_io_l", "s_B_n", "s_C_n", "s_dB_n",
             "s_seq_l"},
}
COMMON = dict(N=16, BLOCK_N=16, CHUNK=32, HAS_DELTA_BIAS=True, DELTA_SOFTPLUS=True,
              HAS_SEQ_IDX=False)


def kernels(block_d, staged=False, sub_chunk=BWD_SUB_CHUNK, folded_sums=BWD_FOLDED_SUMS,
            walk_unroll=1, backward_warps=1):
    """(name, kernel, constexprs, num_warps) for the kernels one training step launches."""
    yield "forward", triton_recurrent._fwd_recurrent_kernel, dict(
        COMMON, HAS_D=True, HAS_Z=True, HAS_INIT=False, WRITE_STATES=True, WRITE_YPRE=False,
        BLOCK_D=block_d, STAGES=1,
        STAGED=staged), 1
    yield "backward", triton_recurrent._bwd_recurrent_kernel, dict(
        COMMON, HAS_D=True, HAS_Z=True, HAS_INIT=False, HAS_DEXIT=True, DETERMINISTIC=True,
        BLOCK_D=block_d, STAGES=1, STAGED=staged, SUB=sub_chunk,
        FOLDED_SUMS=folded_sums and _folds(block_d, COMMON["BLOCK_N"], backward_warps, staged),
        WALK_UNROLL=walk_unroll), backward_warps
    chunked = Plan("chunked", block_d, CHUNKED_CHUNK, COMMON["BLOCK_N"], 1, 1, 1)
    yield "chunked backward", triton_chunked._bwd_chunked_kernel, dict(
        COMMON, CHUNK=CHUNKED_CHUNK, HAS_D=True, HAS_Z=True, HAS_INIT=False, HAS_DEXIT=True, DETERMINISTIC=True,
        BLOCK_D=block_d, **_lane_folds(chunked)), 1
    yield "segment ends", triton_segments._segment_end_kernel, dict(COMMON, BLOCK_D=block_d,
                                                                    STAGED=staged), 1
    yield "segment adjoints", triton_segments._segment_start_adjoint_kernel, dict(
        COMMON, HAS_Z=True, BLOCK_D=block_d, STAGED=staged), 1
    yield "segment carry", triton_segments._segment_carry_kernel, dict(
        N=16, BLOCK_N=16, HAS_X0=True, REVERSE=False, BLOCK_D=2, BLOCK_S=64), 4
    yield "partial sums", triton_reduce._bwd_reduce_kernel, dict(
        N=16, BLOCK=triton_reduce.REDUCE_BLOCK), triton_reduce.REDUCE_WARPS


def _tool(name):
    return str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name)


def compile_kernel(kernel, constexprs, arch=90, num_warps=1, layout="channels-last",
                   maxnreg=None):
    """Compile for sm_{arch}: dict(registers, spills, loops = instructions per step-loop iteration)."""
    sig, consts, attrs = {}, dict(constexprs), {}
    for i, name in enumerate(kernel.arg_names):
        if name in consts:
            sig[name] = "constexpr"
        elif name in UNIT_STRIDES[layout]:
            sig[name], consts[name] = "constexpr", 1
        elif name.endswith("_ptr"):
            sig[name] = "*bf16" if name in BF16_ARGS else ("*i32" if name == "seq_ptr" else "*fp32")
            attrs[(i,)] = [["tt.divisibility", 16]]
        else:
            sig[name] = "i32"
            attrs[(i,)] = [["tt.divisibility", 16]]
    target = GPUTarget("cuda", arch, 32)
    backend = triton.compiler.make_backend(target)
    options = backend.parse_options({"num_warps": num_warps}
                                    | ({"maxnreg": maxnreg} if maxnreg else {}))
    compiled = triton.compile(ASTSource(fn=kernel, signature=sig, constexprs=consts, attrs=attrs),
                              target=target, options=options.__dict__)
    with tempfile.TemporaryDirectory() as tmp:
        ptx, cubin = Path(tmp) / "k.ptx", Path(tmp) / "k.cubin"
        ptx.write_text(compiled.asm["ptx"])
        log = subprocess.run([_tool("ptxas"), f"-arch=sm_{arch}a", "-v", str(ptx), "-o", str(cubin)],
                             capture_output=True, text=True, check=True).stderr
        sass = subprocess.run([_tool("nvdisasm"), "-hex", "-c", str(cubin)], capture_output=True,
                              text=True, check=True).stdout
    regs = re.search(r"Used (\d+) registers", log)
    spills = re.search(r"(\d+) bytes spill stores", log)
    loops = _loop_bodies(sass)
    return dict(registers=int(regs.group(1)) if regs else None,
                spills=int(spills.group(1)) if spills else 0, loops=[len(body) for body in loops],
                loop_spills=sum(bool(re.search(r"\b(LDL|STL)\b", x[0])) for body in loops for x in body),
                load_waits=[_load_waits(body) for body in loops])


def _loop_bodies(sass):
    """The instructions of every loop (a backward branch) in `nvdisasm -hex` output, the step loops
    and the chunk loops around them, each instruction as (text, write barrier, wait mask): sm_70
    and later keep an instruction's scheduling controls in the high 64-bit word of its encoding
    (the line after it); shifted right by 41, bits 5-7 are the scoreboard barrier it sets when it
    completes (7: none) and bits 11-16 the barriers it waits on first."""
    lines = sass.splitlines()
    labels = {m.group(1): i for i, line in enumerate(lines) if (m := re.match(r"^(\.L_x_\d+):", line))}
    loops = []
    for i, line in enumerate(lines):
        m = re.search(r"BRA `\((\.L_x_\d+)\)", line)
        if m and labels.get(m.group(1), i) < i:
            body = []
            for k in range(labels[m.group(1)], i + 1):
                if re.match(r"\s+/\*[0-9a-f]{4,}\*/", lines[k]):
                    high = re.search(r"/\* (0x[0-9a-f]+) \*/", lines[k + 1])
                    ctrl = int(high.group(1), 16) >> 41 if high else 7 << 5
                    body.append((lines[k], (ctrl >> 5) & 7, (ctrl >> 11) & 63))
            if len(body) > 8:  # the step loops, not the spin loops of traps
                loops.append(body)
    return loops


def _load_waits(body):
    """For each global load (LDG) of a loop: how many instructions later, going round the loop,
    the first instruction that waits on its barrier comes. That is where the load blocks, whatever
    the source order: ptxas has 6 barriers, so later loads and shuffles share them, and a wait on
    a barrier waits for everything on it (docs/kernel_tuning_notes.md #27, #28)."""
    out = []
    for k, (text, barrier, _) in enumerate(body):
        if re.search(r"\bLDG\b", text) and barrier != 7:
            out.append(next((j for j in range(1, len(body) + 1)
                             if body[(k + j) % len(body)][2] >> barrier & 1), len(body)))
    return sorted(out)


def _maxnreg(option, layout, block_d):
    """The backward's register limit: --maxnreg's (0: none), else plan()'s rule."""
    if option is not None:
        return option or None
    return BWD_MAXNREG if layout == "channels-last" and block_d == BWD_MAXNREG_BLOCK_D else None


def _waits_cell(load_waits):
    """'fewest / median' of each loop's _load_waits, loops comma-separated ('-' for none)."""
    return ", ".join(f"{w[0]} / {w[len(w) // 2]}" if w else "-" for w in load_waits)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", type=int, default=90, help="compute capability x10 (default: %(default)s)")
    p.add_argument("--block-d", type=int, nargs="+", default=[16, 32],
                   help="BLOCK_D values to compile the kernels at (default: %(default)s)")
    p.add_argument("--layout", choices=tuple(UNIT_STRIDES), nargs="+", default=list(UNIT_STRIDES),
                   help="input layouts to compile for (time-contiguous: the staged kernels; "
                        "default: both)")
    p.add_argument("--sub-chunk", type=int, default=BWD_SUB_CHUNK,
                   help="steps per sub-chunk of the backward (default: %(default)s)")
    p.add_argument("--maxnreg", type=int, default=None,
                   help="register limit of the backward (ptxas .maxnreg) at every tile, 0 for none "
                        "(default: as plan() sets it, BWD_MAXNREG for channels-last inputs at "
                        "BLOCK_D BWD_MAXNREG_BLOCK_D, none elsewhere)")
    p.add_argument("--folded-sums", choices=("on", "off"), default=None,
                   help="the backward's dB/dC sums by the folded butterfly where the tile allows "
                        "(default: as BWD_FOLDED_SUMS, %s)" % ("on" if BWD_FOLDED_SUMS else "off"))
    p.add_argument("--walk-unroll", type=int, choices=(1, 2), default=None,
                   help="the backward's walk back unrolled by this factor (default: as plan() "
                        "sets it, BWD_WALK_UNROLL (%d) without a register limit on unstaged "
                        "inputs, 1 elsewhere)" % BWD_WALK_UNROLL)
    p.add_argument("--backward-warps", type=int, choices=(1, 2), default=1,
                   help="warps a backward program (default: %(default)s, as plan() sets it)")
    p.add_argument("--waits", action="store_true",
                   help="also print, per loop, the fewest and the median instructions between a "
                        "global load and the first wait on its scoreboard barrier")
    args = p.parse_args(argv)
    folded = BWD_FOLDED_SUMS if args.folded_sums is None else args.folded_sums == "on"
    chunk = COMMON["CHUNK"]
    if not 1 <= args.sub_chunk <= chunk or args.sub_chunk & (args.sub_chunk - 1):
        p.error(f"--sub-chunk: expected a power of two from 1 to {chunk}, got {args.sub_chunk}")
    if args.maxnreg is not None and args.maxnreg != 0 and not 32 <= args.maxnreg <= 255:
        p.error(f"--maxnreg: expected 0 (no limit) or a register count from 32 to 255, got {args.maxnreg}")
    if os.environ.get("TRITON_INTERPRET") == "1":
        print("error: unset TRITON_INTERPRET (the interpreter replaces the kernels by Python code)",
              file=sys.stderr)
        return 2
    print("| inputs | kernel | BLOCK_D | registers | spill bytes | spill loads/stores in loops | "
          "instructions per loop iteration |" + (" loads' first waits, fewest / median |" if args.waits else ""))
    print("|---|---|---|---|---|---|---|" + ("---|" if args.waits else ""))
    for layout in args.layout:
        for bd in args.block_d:
            maxnreg = _maxnreg(args.maxnreg, layout, bd)
            unroll = args.walk_unroll or (BWD_WALK_UNROLL if maxnreg is None and layout != "time"
                                          else 1)
            for name, kernel, constexprs, warps in kernels(bd, staged=layout == "time",
                                                               sub_chunk=args.sub_chunk,
                                                               folded_sums=folded,
                                                               walk_unroll=unroll,
                                                               backward_warps=args.backward_warps):
                r = compile_kernel(kernel, constexprs, args.arch, warps, layout,
                                   maxnreg if name == "backward" else None)
                print(f"| {layout} | {name} | {constexprs.get('BLOCK_D', '-')} | {r['registers']} | "
                      f"{r['spills']} | {r['loop_spills']} | {', '.join(map(str, r['loops'])) or '-'} |"
                      + (f" {_waits_cell(r['load_waits'])} |" if args.waits else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
