"""GPU benchmark of the Triton scan, side by side with mamba_ssm's CUDA kernel when given (--peer).

Run on a CUDA machine: ``mamba-bio-audio bench gpu --peer .peer/mamba_ssm_cuda --out bench.json``.
Every time is the median of CUDA-event timings (``triton.testing.do_bench``) after warm-up, over
inputs rotated among fresh random sets; ours and the peer get the same inputs in the same run.
Floors: bytes that must cross HBM over the measured device-to-device copy bandwidth, and
special-function ops (the exp(ΔA) of every state element plus softplus and silu) over the
measured exp2 throughput. Prints markdown tables and writes everything to --out (JSON).
"""

import dataclasses
import datetime
import functools
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from ..common.arguments import positive_float, positive_int
from ..common.outputs import write_output
from .gpu_models import model_table, run_models  # noqa: F401 (model_table: tests use it here)

MUFU_PER_ELEM = 4  # softplus (exp, log) and silu (exp, rcp) per (b, d, t), besides N exp(ΔA)
# batch x dim x L: the wide layers of the Mamba paper's LMs, and the small-width long sequences
# this project's DNA and audio models train at (dna-small's d_inner is 256)
DEFAULT_SHAPES = ",".join([f"8x2048x{L}" for L in (1024, 2048, 4096, 8192, 16384, 32768, 65536)]
                          + ["1x256x16384", "1x256x131072", "8x256x4096", "1x2048x1048576",
                             "1x5120x8192"])
DEFAULT_MODEL_ROWS = "dna-small:1x131072,audio-unet:1x131072,dna-small:8x4096"
TUNE_SHAPES = "8x2048x4096,1x256x16384,1x256x131072,8x256x4096,1x5120x8192"
# (BLOCK_D, warps, pipelining stages) that --tune tries, each at several segment counts (stages 3
# measured within 3 % of 1, kernel_tuning_notes.md #8); 32 x 2 warps puts the warps on the state
# axis (more warps a scheduler where programs are few, "Next steps after #35")
TUNE_TILES = [(8, 1, 1), (16, 1, 1), (32, 1, 1), (32, 2, 1), (64, 2, 1)]
# the backward's sub-chunks, then register limits (ptxas .maxnreg: 10 and 12 one-warp programs an
# SM instead of 8), tried on the best tile of each shape
TUNE_SUB_CHUNKS = (8, 16)
TUNE_MAXNREG = (200, 168)
# sub-segments of the backward's segment-adjoint pass per segment, where the best plan's segments split
TUNE_ADJOINT_SPLITS = (1, 2, 4)


def add_arguments(p):
    p.add_argument("--out", default="bench_gpu.json", help="JSON results file (default: %(default)s)")
    p.add_argument("--peer", metavar="DIR", default=None,
                   help="folder of mamba_ssm's compiled CUDA scan (cuda_scan.py + "
                        "selective_scan_cuda.so): adds its columns and ours/peer ratios")
    p.add_argument("--shapes", default=DEFAULT_SHAPES,
                   help="comma list of BATCHxDIMxL scan shapes (default: the issue-13 set)")
    p.add_argument("--state", type=positive_int, default=16, help="state size N (default: %(default)s)")
    p.add_argument("--layout", choices=("time", "channels-last"), default="time",
                   help="scan inputs' memory layout: time-contiguous (batch, dim, L), as mamba_ssm "
                        "takes them, or channels-last, as this project's mixer passes them; the "
                        "peer always gets time-contiguous inputs (default: %(default)s)")
    p.add_argument("--graph", action="store_true",
                   help="also time each scan replayed from a CUDA graph (GPU time without the "
                        "host's launch work; its own columns), and each model row's whole "
                        "training step captured in one")
    p.add_argument("--kernels", action="store_true",
                   help="also profile each scan row's forward + backward (torch.profiler): the GPU "
                        "time of every kernel it launches, ours and the peer's, in microseconds "
                        "per call, and the host time of the call")
    p.add_argument("--tune", action="store_true",
                   help="first sweep BLOCK_D, warps, stages and segments at --tune-shapes (with "
                        "--graph, each configuration timed replayed from a CUDA graph)")
    p.add_argument("--tune-shapes", default=TUNE_SHAPES,
                   help="comma list of BATCHxDIMxL shapes for --tune (default: %(default)s)")
    p.add_argument("--parts", default="scan,decode,models",
                   help="comma list of: scan,decode,models (default: %(default)s)")
    p.add_argument("--model-rows", default=DEFAULT_MODEL_ROWS,
                   help="comma list of PRESET:BATCHxL training steps to time (default: %(default)s)")
    p.add_argument("--budget-s", type=positive_float, default=1e9, help="skip parts that start after this")


def parse_shapes(text, n_fields, option):
    """'8x2048x4096,...' -> [(8, 2048, 4096), ...]; ValueError naming the option otherwise."""
    out = []
    for item in text.split(","):
        parts = item.strip().split("x")
        if len(parts) != n_fields or not all(p.isdigit() and int(p) > 0 for p in parts):
            want = "x".join(["N"] * n_fields)
            raise ValueError(f"{option}: {item.strip()!r} is not {want} (positive integers)")
        out.append(tuple(int(p) for p in parts))
    return out


def parse_model_rows(text):
    rows = []
    for item in text.split(","):
        preset, _, shape = item.strip().partition(":")
        if not preset or not shape:
            raise ValueError(f"--model-rows: {item.strip()!r} is not PRESET:BATCHxL")
        rows.append((preset, *parse_shapes(shape, 2, "--model-rows")[0]))
    return rows


def load_peer(folder):
    """mamba_ssm's selective_scan_cuda_fn from `folder` (a measuring instrument, never a dependency)."""
    folder = Path(folder)
    if not (folder / "cuda_scan.py").is_file() or not (folder / "selective_scan_cuda.so").is_file():
        raise ValueError(f"--peer {folder}: expected a folder holding cuda_scan.py and "
                         f"selective_scan_cuda.so (../shared/peers/mamba_ssm_cuda)")
    spec = importlib.util.spec_from_file_location("mamba_ssm_cuda_scan_peer", folder / "cuda_scan.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.selective_scan_cuda_fn


def _bench(fn, sets, rep=200):
    """Median ms of fn(inputs) over rotating input sets (CUDA events)."""
    import triton.testing
    i = [0]

    def call():
        i[0] += 1
        fn(sets[i[0] % len(sets)])
    return triton.testing.do_bench(call, warmup=25, rep=rep, return_mode="median")


def _graph_ms(step, repeat=1):
    """Median ms of one step() replayed from a CUDA graph (GPU time without the host's launch
    work): warmed up and captured on a side stream, `repeat` calls per graph."""
    graph, stream = torch.cuda.CUDAGraph(), torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        step()
        with torch.cuda.graph(graph, stream=stream):
            for _ in range(repeat):
                step()
    torch.cuda.current_stream().wait_stream(stream)
    return _bench(lambda _: graph.replay(), [None]) / repeat


def _env():
    drv = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout.strip()
    import triton
    p = torch.cuda.get_device_properties(0)
    return dict(device=torch.cuda.get_device_name(0), sms=p.multi_processor_count,
                memory_gib=round(p.total_memory / 2**30, 1), driver=drv, torch=torch.__version__,
                triton=triton.__version__, cuda=torch.version.cuda, command=" ".join(sys.argv),
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))


def measure_floors():
    """Device-to-device copy bandwidth (bytes read + written per s) and exp2 throughput (per s)."""
    import triton
    import triton.language as tl

    @triton.jit
    def exp_kernel(x_ptr, y_ptr, K: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        x = tl.load(x_ptr + offs)
        y = x
        for _ in range(K):
            y = tl.exp2(-y)  # a chain of ex2.approx per element, values stay in (0, 1]
        tl.store(y_ptr + offs, y)

    n = 1 << 28  # 1 GiB of fp32
    src, dst = torch.rand(n, device="cuda"), torch.empty(n, device="cuda")
    ms = _bench(lambda _: dst.copy_(src), [None])
    bw = 2 * n * 4 / (ms * 1e-3)
    del src, dst
    m, K = 1 << 24, 256
    x, y = torch.rand(m, device="cuda"), torch.empty(m, device="cuda")
    ms_exp = _bench(lambda _: exp_kernel[(m // 1024,)](x, y, K=K, BLOCK=1024), [None])
    return dict(copy_bytes_per_s=bw, exp_per_s=m * K / (ms_exp * 1e-3))


def scan_inputs(batch, dim, L, N, grad, dtype=torch.bfloat16, layout="time"):
    """Random scan inputs: (batch, dim, L) and (batch, N, L) tensors and A (dim, N), contiguous, or
    (layout "channels-last") views of (batch, L, dim) and (batch, L, N) memory and A a view of
    (N, dim) memory, as our mixer passes them (SelectiveSSM.A: the Triton scan reads A^T, so a
    call makes no copy of it)."""
    r = lambda *s: torch.randn(*s, device="cuda")  # noqa: E731
    if layout == "time":
        seq = lambda c: r(batch, c, L)  # noqa: E731
        A = -torch.exp(0.5 * r(dim, N))
    else:
        seq = lambda c: r(batch, L, c).transpose(1, 2)  # noqa: E731
        A = -torch.exp(0.5 * r(N, dim)).t()
    x = dict(u=seq(dim).to(dtype), delta=(0.5 * seq(dim) - 2).to(dtype),
             A=A, B=seq(N).to(dtype), C=seq(N).to(dtype),
             D=r(dim), z=seq(dim).to(dtype), delta_bias=0.1 * r(dim))
    if grad:
        for v in x.values():
            v.requires_grad_(True)
        x["dy"] = seq(dim).to(dtype)
    return x


def _time_contiguous(x):
    """The same inputs, contiguous (time-contiguous sequences, A (dim, N)): mamba_ssm's kernel
    copies anything else first."""
    return {k: v.detach().contiguous().requires_grad_(v.requires_grad) for k, v in x.items()}


def floors(batch, dim, L, N, fl, backward=False):
    """(bytes floor ms, special-function floor ms) for the forward, or forward + backward."""
    elems = batch * dim * L
    io = 4 if not backward else 4 + 7  # fwd: u, delta, z, y; bwd adds dy, u, delta, z, du, ddelta, dz
    bc = 2 * batch * N * L * (1 if not backward else 4)
    byts = elems * io * 2 + bc * 2
    sfu = elems * (N + MUFU_PER_ELEM) * (1 if not backward else 3)  # bwd recomputes a, a_next
    return byts / fl["copy_bytes_per_s"] * 1e3, sfu / fl["exp_per_s"] * 1e3


def _forward(fn):
    return lambda x: fn(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"],
                        delta_softplus=True)


GRAD_INPUTS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def _forward_backward(fn):
    """One forward + backward of fn, returning the gradients (torch.autograd.grad) rather than
    accumulating them into .grad: with .backward() every call after the first added each gradient
    to the last one's, 8 elementwise kernels that a training step does not run on activations
    (0.2-0.4 ms at 1 x 256 x 131K and 8 x 2048 x 4K, docs/benchmarks.md 15:12)."""
    f = _forward(fn)
    return lambda x: torch.autograd.grad(f(x), [x[k] for k in GRAD_INPUTS], x["dy"])


def _graph_times(fn, x):
    """(forward, forward + backward) ms of fn on inputs x replayed from CUDA graphs."""
    f = _forward(fn)
    with torch.no_grad():
        fwd = _graph_ms(lambda: f(x))
    fb = _graph_ms(functools.partial(_forward_backward(fn), x))
    return fwd, fb


def _n_sets(batch, dim, L, limit_bytes=8e9):
    """How many input sets to rotate among (fewer for huge shapes, at least 1)."""
    return max(1, min(3, int(limit_bytes // (batch * dim * L * 2 * 8))))


def kernel_times(step, iters=10):
    """GPU time of every kernel that step() launches: [(kernel name, launches per call, us per
    call)], largest first, from torch.profiler's device events over `iters` calls (after one
    warm-up call)."""
    from torch.profiler import ProfilerActivity, profile
    step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            step()
        torch.cuda.synchronize()
    totals = {}
    for e in prof.events():
        if e.device_type != torch.autograd.DeviceType.CUDA:
            continue
        count, us = totals.get(e.name, (0, 0.0))
        totals[e.name] = (count + 1, us + e.time_range.elapsed_us())
    rows = [(name, count / iters, us / iters) for name, (count, us) in totals.items()]
    return sorted(rows, key=lambda r: -r[2])


def host_us(steps, iters=20):
    """{name: median host time of one steps[name]() in us}: from the call until it returns with
    its GPU work queued, the GPU idle before each call. Where this exceeds the kernels' GPU time,
    the host's launch work, not the GPU, sets the pace of back-to-back calls. The steps take turns
    (one call of each, iters + 1 times, the first round not counted), so that a change in the
    host's speed during the measurement (it varied by up to 50 % between runs on the lent
    machines) reaches every implementation alike."""
    import statistics
    times = {name: [] for name in steps}
    for _ in range(iters + 1):
        for name, step in steps.items():
            torch.cuda.synchronize()
            t = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t)
    torch.cuda.synchronize()
    return {name: statistics.median(ts[1:]) * 1e6 for name, ts in times.items()}


def kernel_table(row):
    """Markdown table of a row's kernel breakdown (`--kernels`): ours and the peer's, with each
    one's host time (`host_us`) where measured."""
    lines = [f"kernels of one forward + backward at {row['batch']} x {row['dim']} x {row['L']} "
             f"(us per call, GPU time):", "| impl | kernel | launches | us |", "|---|---|---|---|"]
    for impl, kernels in row["kernels"].items():
        total = sum(us for _, _, us in kernels)
        for name, launches, us in kernels:
            lines.append(f"| {impl} | {name[:70]} | {launches:g} | {us:.1f} |")
        lines.append(f"| {impl} | total | | {total:.1f} |")
        if impl in row.get("host_us", {}):
            lines.append(f"| {impl} | host time of the call | | {row['host_us'][impl]:.1f} |")
    return "\n".join(lines)


def scan_row(shape, N, fl, peer, layout="time", graph=False, kernels=False):
    """Forward and forward+backward of ours (default plan) and the peer on the same inputs
    (with layout "channels-last", ours reads them channels-last and the peer time-contiguous
    copies, each kernel's own layout). `graph`: also each replayed from a CUDA graph, the GPU's
    time without the host's launch work."""
    from mamba_bio_audio.kernels.selective_scan.triton_scan import plan, selective_scan_triton
    batch, dim, L = shape
    p = plan(batch, dim, L, N, 1, torch.device("cuda"), channels_last=layout != "time")
    row = dict(batch=batch, dim=dim, L=L, N=N, layout=layout, segments=p.n_seg, block_d=p.block_d)
    impls = {"ours": selective_scan_triton} | ({"peer": peer} if peer else {})

    def inputs(name, sets):
        return sets if name == "ours" or layout == "time" else [_time_contiguous(x) for x in sets]
    with torch.no_grad():
        sets = [scan_inputs(batch, dim, L, N, False, layout=layout) for _ in range(_n_sets(batch, dim, L))]
        for name, fn in impls.items():
            row[f"{name}_fwd_ms"] = _bench(_forward(fn), inputs(name, sets))
        if peer:  # same inputs, same answer: the measurement compares like with like
            x = sets[0]
            row["max_abs_diff_y"] = (_forward(selective_scan_triton)(x).float()
                                     - _forward(peer)(inputs("peer", [x])[0]).float()).abs().max().item()
    del sets
    sets = [scan_inputs(batch, dim, L, N, True, layout=layout) for _ in range(_n_sets(batch, dim, L, 4e9))]
    steps = {}  # --kernels: each implementation's f+b on its first input set, for host_us
    for name, fn in impls.items():
        these = inputs(name, sets)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        row[f"{name}_fwd_bwd_ms"] = _bench(_forward_backward(fn), these)
        row[f"{name}_fwd_bwd_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        if graph:
            row[f"{name}_fwd_graph_ms"], row[f"{name}_fwd_bwd_graph_ms"] = _graph_times(fn, these[0])
        if kernels:
            steps[name] = functools.partial(_forward_backward(fn), these[0])
            row.setdefault("kernels", {})[name] = kernel_times(steps[name])
        del these
    if kernels:
        row["host_us"] = host_us(steps)
    del sets, steps
    bytes_ms, sfu_ms = floors(batch, dim, L, N, fl)
    row.update(floor_bytes_ms=bytes_ms, floor_sfu_ms=sfu_ms,
               fwd_over_floor=row["ours_fwd_ms"] / max(bytes_ms, sfu_ms))
    if peer:
        row["fwd_ratio"] = row["ours_fwd_ms"] / row["peer_fwd_ms"]
        row["fwd_bwd_ratio"] = row["ours_fwd_bwd_ms"] / row["peer_fwd_bwd_ms"]
        if graph:
            row["fwd_graph_ratio"] = row["ours_fwd_graph_ms"] / row["peer_fwd_graph_ms"]
            row["fwd_bwd_graph_ratio"] = row["ours_fwd_bwd_graph_ms"] / row["peer_fwd_bwd_graph_ms"]
    return row


def scan_table(rows):
    """Markdown table of scan rows; peer columns and ratios where measured."""
    peer = any("peer_fwd_ms" in r for r in rows)
    head = ["batch x dim", "L", "segments", "ours fwd ms"] + (["mamba_ssm fwd ms", "fwd ratio"] if peer else [])
    head += ["ours f+b ms"] + (["mamba_ssm f+b ms", "f+b ratio"] if peer else [])
    head += ["floor ms (bytes / exp)", "fwd / floor", "ours f+b GiB"] + (["mamba_ssm f+b GiB"] if peer else [])
    graph = any("ours_fwd_graph_ms" in r for r in rows)
    if graph:
        head += ["ours fwd / f+b ms, graph"] + (["mamba_ssm fwd / f+b ms, graph", "graph ratios"] if peer else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['batch']} x {r['dim']} | {r['L']} | {r['error']} |")
            continue
        cells = [f"{r['batch']} x {r['dim']}", str(r["L"]), str(r["segments"]), f"{r['ours_fwd_ms']:.3f}"]
        if peer:
            cells += [f"{r['peer_fwd_ms']:.3f}", f"{r['fwd_ratio']:.2f}"]
        cells.append(f"{r['ours_fwd_bwd_ms']:.3f}")
        if peer:
            cells += [f"{r['peer_fwd_bwd_ms']:.3f}", f"{r['fwd_bwd_ratio']:.2f}"]
        cells += [f"{r['floor_bytes_ms']:.3f} / {r['floor_sfu_ms']:.3f}", f"{r['fwd_over_floor']:.2f}",
                  f"{r['ours_fwd_bwd_peak_gib']:.2f}"]
        if peer:
            cells.append(f"{r['peer_fwd_bwd_peak_gib']:.2f}")
        if graph:
            cells.append(f"{r['ours_fwd_graph_ms']:.3f} / {r['ours_fwd_bwd_graph_ms']:.3f}")
            if peer:
                cells += [f"{r['peer_fwd_graph_ms']:.3f} / {r['peer_fwd_bwd_graph_ms']:.3f}",
                          f"{r['fwd_graph_ratio']:.2f} / {r['fwd_bwd_graph_ratio']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_scan(args, fl, peer):
    rows = []
    for shape in parse_shapes(args.shapes, 3, "--shapes"):
        try:
            row = scan_row(shape, args.state, fl, peer, args.layout, args.graph, args.kernels)
        except torch.cuda.OutOfMemoryError:
            row = dict(batch=shape[0], dim=shape[1], L=shape[2], error="out of memory")
        rows.append(row)
        print(json.dumps(row), flush=True)
        if "kernels" in row:
            print(kernel_table(row), flush=True)
        torch.cuda.empty_cache()
    print(f"scan inputs: {args.layout}", flush=True)
    print(scan_table(rows), flush=True)
    return rows


def tune(args, peer=None):
    """Sweep BLOCK_D, warps, stages and segments of the recurrent kernels, each direction, at
    --tune-shapes, then the backward's sub-chunks, register limits, adjoint splits and (without
    a register limit, unstaged) the walk back's unroll on the best; print each shape's best
    against the default plan.

    With a peer, its forward and forward+backward on the same inputs, for scale. The defaults in
    kernels/selective_scan/triton_scan.py are set by hand from this record."""
    from mamba_bio_audio.kernels.selective_scan import triton_scan as ts
    results, best_rows = [], []
    for batch, dim, L in parse_shapes(args.tune_shapes, 3, "--tune-shapes"):
        N = args.state
        x = scan_inputs(batch, dim, L, N, False, layout=args.layout)
        cl = args.layout != "time"
        a = (x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], None, None, True)
        dy = torch.randn_like(x["u"])  # in u's memory layout
        dev = x["u"].device
        auto = ts.plan(batch, dim, L, N, 1, dev, channels_last=cl)
        n_chunks = -(-L // auto.chunk)
        segs = sorted({s for s in (1, auto.n_seg // 2, auto.n_seg, 2 * auto.n_seg, 4 * auto.n_seg, 2, 4)
                       if 1 <= s <= max(1, n_chunks // 2)})
        for direction in ("fwd", "bwd"):
            bwd = direction == "bwd"

            def timed(p):
                if not bwd:
                    call = lambda: ts._fwd(*a, False, p)  # noqa: E731
                else:
                    states = ts._fwd(*a, True, p)[2]
                    call = lambda: ts._bwd(*a[:10], True, states, dy, None, True, p)  # noqa: E731
                return _graph_ms(call) if args.graph else _bench(lambda _: call(), [None], rep=40)
            default = ts.plan(batch, dim, L, N, 1, dev, backward=bwd, channels_last=cl)
            default_ms = timed(default)
            best = (default_ms, default)
            for bd, warps, stages in TUNE_TILES:
                if bd * N < 32 * warps:
                    continue
                for n_seg in segs:
                    p = ts.plan(batch, dim, L, N, 1, dev, backward=bwd, block_d=bd, segments=n_seg,
                                num_warps=warps, stages=stages, channels_last=cl)
                    try:
                        ms = timed(p)
                    except Exception as e:  # noqa: BLE001  (a config that fails is recorded)
                        ms = float("inf")
                        print(f"{batch}x{dim}x{L} {direction} {p}: {type(e).__name__}: {str(e)[:200]}")
                    results.append(dict(shape=f"{batch}x{dim}x{L}", direction=direction, ms=ms, **vars(p)))
                    best = min(best, (ms, p), key=lambda t: t[0])
            tries = ([dict(sub_chunk=sub) for sub in TUNE_SUB_CHUNKS]
                     + [dict(maxnreg=r) for r in TUNE_MAXNREG]
                     + [dict(adjoint_split=k) for k in TUNE_ADJOINT_SPLITS
                        if best[1].n_seg > 1 and best[1].chunks_per_seg % k == 0]
                     + ([dict(walk_unroll=3 - best[1].walk_unroll)]
                        if best[1].maxnreg is None and not best[1].staged else [])) if bwd else []
            for change in tries:
                p = dataclasses.replace(best[1], **change)
                ms = timed(p)
                results.append(dict(shape=f"{batch}x{dim}x{L}", direction=direction, ms=ms, **vars(p)))
                best = min(best, (ms, p), key=lambda t: t[0])
            row = dict(shape=f"{batch}x{dim}x{L}", direction=direction, default_ms=default_ms,
                       default=vars(default), best_ms=best[0], best=vars(best[1]))
            best_rows.append(row)
            print(f"tune {row['shape']} {direction}: default {default_ms:.3f} ms "
                  f"(block_d {default.block_d}, {default.n_seg} segments, {default.num_warps} warps, "
                  f"{default.stages} stages); best {best[0]:.3f} ms (block_d {best[1].block_d}, "
                  f"{best[1].n_seg} segments, {best[1].num_warps} warps, {best[1].stages} stages, "
                  f"sub-chunk {best[1].sub_chunk}, maxnreg {best[1].maxnreg}, adjoint split "
                  f"{best[1].adjoint_split}, walk unroll {best[1].walk_unroll})",
                  flush=True)
        if peer:
            with torch.no_grad():
                peer_fwd = _bench(_forward(peer), [x])
            xg = scan_inputs(batch, dim, L, N, True)
            peer_fb = _bench(_forward_backward(peer), [xg])
            mine = [r for r in best_rows if r["shape"] == f"{batch}x{dim}x{L}"]
            fwd_ms, bwd_ms = mine[0]["best_ms"], mine[1]["best_ms"]
            for r in mine:
                r.update(peer_fwd_ms=peer_fwd, peer_fwd_bwd_ms=peer_fb)
            print(f"tune {batch}x{dim}x{L}: best fwd / mamba_ssm fwd = {fwd_ms / peer_fwd:.2f}; "
                  f"(best fwd + best bwd) / mamba_ssm fwd+bwd = {(fwd_ms + bwd_ms) / peer_fb:.2f}",
                  flush=True)
            del xg
        del x, dy
        torch.cuda.empty_cache()
    return dict(sweep=results, best=best_rows)


def run_decode(args):
    from mamba_bio_audio.kernels.state_update.triton_update import selective_state_update_triton
    out = []
    D, N = 2048, args.state
    for batch in (1, 64):
        st = torch.randn(batch, D, N, device="cuda")
        r = lambda *s: torch.randn(*s, device="cuda", dtype=torch.bfloat16)  # noqa: E731
        sets = [dict(x=r(batch, D), dt=r(batch, D), B=r(batch, N), C=r(batch, N), z=r(batch, D))
                for _ in range(4)]
        A, Dv, bias = -torch.rand(D, N, device="cuda") - 0.5, torch.randn(D, device="cuda"), torch.randn(D, device="cuda")
        ms = _bench(lambda s: selective_state_update_triton(st, s["x"], s["dt"], A, s["B"], s["C"], Dv,
                                                            s["z"], bias, True), sets)
        s0 = sets[0]
        step = lambda: selective_state_update_triton(st, s0["x"], s0["dt"], A, s0["B"], s0["C"], Dv,  # noqa: E731
                                                     s0["z"], bias, True)
        step()
        ms_graph = _graph_ms(step, repeat=100)
        out.append(dict(op="selective_state_update", batch=batch, dim=D, N=N, us_per_step=ms * 1e3,
                        us_per_step_cuda_graph=ms_graph * 1e3))
        print(f"decode kernel batch {batch} x {D}: {ms * 1e3:.2f} us/step eager, "
              f"{ms_graph * 1e3:.2f} us/step in a CUDA graph", flush=True)
    return out


def main(args) -> int:
    try:
        parse_shapes(args.shapes, 3, "--shapes")
        parse_shapes(args.tune_shapes, 3, "--tune-shapes")
        parse_model_rows(args.model_rows)
        unknown = set(filter(None, args.parts.split(","))) - {"scan", "decode", "models"}
        if unknown:
            raise ValueError(f"--parts: unknown part(s) {', '.join(sorted(unknown))}; "
                             f"choose from scan, decode, models")
        if not torch.cuda.is_available():
            raise ValueError("bench gpu needs a CUDA device (none is visible)")
        peer = load_peer(args.peer) if args.peer else None
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    parts = set(args.parts.split(","))
    res = dict(env=_env(), args={k: v for k, v in vars(args).items() if k != "bench_main"})
    print(res["env"], flush=True)
    res["floors"] = fl = measure_floors()
    print(f"copy {fl['copy_bytes_per_s'] / 1e12:.2f} TB/s, exp2 {fl['exp_per_s'] / 1e12:.2f} T/s", flush=True)
    steps = [("tune", lambda: tune(args, peer)), ("scan", lambda: run_scan(args, fl, peer)),
             ("decode", lambda: run_decode(args)), ("models", lambda: run_models(args, peer))]
    t_start = time.monotonic()
    for name, fn in steps:
        if (name == "tune" and not args.tune) or (name != "tune" and name not in parts):
            continue
        if time.monotonic() - t_start > args.budget_s:
            print(f"{name}: skipped (over --budget-s)")
            res[name] = dict(error="skipped: time budget")
            continue
        try:
            res[name] = fn()
        except Exception as e:  # noqa: BLE001  (record and go on: one failing part must not lose the rest)
            res[name] = dict(error=f"{type(e).__name__}: {e}")
            print(f"{name} failed: {type(e).__name__}: {e}", flush=True)
        torch.cuda.empty_cache()
        write_output(Path(args.out), json.dumps(res, indent=1, default=str))
    return 0


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
