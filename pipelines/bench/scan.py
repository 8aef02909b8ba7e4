"""Time and peak memory of the selective scan backends beside a materialising PyTorch scan.

`mamba-bio-audio bench scan [--lengths 1024 4096 ...] [--json FILE]` prints a table and writes
JSON. Each row is one shape (batch, dim, N, L); each implementation is timed for the forward
(under torch.no_grad, as in inference) and for forward + backward (as in training).

On the CPU every measurement runs in a fresh subprocess: peak memory is that process's peak
resident set (getrusage ru_maxrss) minus its resident set just before the measured call, so it
sees every allocation, torch's included; time is the median of --repeats calls. On CUDA the
measurements run in this process: time from `triton.testing.do_bench` (median, CUDA events),
memory from `torch.cuda.max_memory_allocated`; the table adds the Triton backend, the
memory-bandwidth floor for the shape and causal bf16 `scaled_dot_product_attention` at equal width.

The "materialising" baseline is what most pure-PyTorch Mambas do (mamba-minimal's selective_scan):
it builds exp(ΔA) and ΔBu as full (batch, dim, L, N) tensors, runs a sequential loop over L on
them, and lets autograd keep every state.
"""

import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from ...kernels.selective_scan import selective_scan, triton_available
from ..common.arguments import non_negative_int, positive_float, positive_int

DEFAULT_LENGTHS = (1024, 4096, 16384, 65536)


def materialising_scan(u, delta, A, B, C, D, z, delta_bias):
    """The straightforward scan: full (b, d, L, N) tensors, a sequential loop over L, autograd.

    The loop takes its slices with `unbind` (one autograd node for all L slices); indexing
    deltaA[:, :, t] instead would make backward quadratic in L. Computes in float32 (float64
    for float64 inputs).

    Args:
        u, delta, z: (b, d, L).  A: (d, N).  B, C: (b, N, L).  D, delta_bias: (d,).
    Returns:
        y: (b, d, L) in u's dtype.
    """
    dtype_in = u.dtype
    ct = torch.float64 if u.dtype == torch.float64 else torch.float32
    u, delta, z, B, C, A, D, delta_bias = (t.to(ct) for t in (u, delta, z, B, C, A, D, delta_bias))
    batch, dim, _ = u.shape
    dt = F.softplus(delta + delta_bias[:, None])  # (b, d, L)
    deltaA = torch.exp(dt.unsqueeze(-1) * A[:, None, :])  # (b, d, L, N)
    deltaB_u = (dt * u).unsqueeze(-1) * B.transpose(1, 2).unsqueeze(1)  # (b, d, L, N)
    h = u.new_zeros(batch, dim, A.shape[1])
    states = []
    for a_t, bu_t in zip(deltaA.unbind(2), deltaB_u.unbind(2)):
        h = a_t * h + bu_t  # (b, d, N)
        states.append(h)
    y = torch.einsum("bdln,bnl->bdl", torch.stack(states, dim=2), C)
    return ((y + u * D[:, None]) * F.silu(z)).to(dtype_in)


def make_inputs(batch, dim, N, L, device="cpu", dtype=torch.float32, seed=0):
    """Inputs shaped and scaled as in a Mamba layer (S4D-real A, softplus Δ around 0.01-0.1)."""
    g = torch.Generator(device="cpu").manual_seed(seed)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(device=device, dtype=dtype)

    A = -torch.arange(1, N + 1, dtype=torch.float32).repeat(dim, 1)  # (d, N)
    return dict(u=rand(batch, dim, L), delta=rand(batch, dim, L, scale=0.5),
                A=A.to(device), B=rand(batch, N, L), C=rand(batch, N, L),
                D=torch.ones(dim, device=device), z=rand(batch, dim, L),
                delta_bias=torch.full((dim,), -3.0, device=device))


def _scan_fn(impl):
    if impl == "materialising":
        return materialising_scan
    return lambda **kw: selective_scan(**kw, delta_softplus=True, backend=impl)


def _current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure_cpu(impl, batch, dim, N, L, mode, repeats) -> dict:
    """One measurement on the CPU, meant to run in a fresh process: median time and peak memory."""
    inputs = make_inputs(batch, dim, N, L)
    fn = _scan_fn(impl)
    train = mode == "fwd+bwd"
    for name in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias"):
        inputs[name].requires_grad_(train)
    grad = torch.randn(batch, dim, L)

    def once():
        if train:
            fn(**inputs).backward(grad)
            for t in inputs.values():
                t.grad = None
        else:
            with torch.no_grad():
                fn(**inputs)

    warm = make_inputs(batch, dim, N, 256)  # one-time initialisation stays out of the peak
    for name in warm:
        warm[name].requires_grad_(train)
    out = fn(**warm)
    if train:
        out.backward(torch.ones_like(out))
    del warm, out
    rss_before = _current_rss()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        once()
        times.append(time.perf_counter() - start)
        if len(times) == 1:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
    return {"time_s": statistics.median(times), "peak_bytes": max(peak, 0)}


def _run_worker(spec: dict, timeout: float) -> dict:
    cmd = [sys.executable, "-m", "mamba_bio_audio.pipelines.bench.scan", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else
                f"exit status {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _materialising_bytes(batch, dim, N, L) -> int:
    """Rough float32 footprint of the baseline's fwd+bwd: about 7 full (b, d, L, N) tensors."""
    return 7 * 4 * batch * dim * L * N


def _available_bytes() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def measure_cuda(impl, batch, dim, N, L, mode) -> dict:
    """One measurement on the GPU: do_bench median time, max_memory_allocated above the inputs."""
    from triton.testing import do_bench

    dtype = torch.bfloat16
    train = mode == "fwd+bwd"
    if impl == "sdpa":
        heads = max(1, dim // 64)
        qkv = [torch.randn(batch, heads, L, dim // heads, device="cuda", dtype=dtype,
                           requires_grad=train) for _ in range(3)]
        grad = torch.randn_like(qkv[0])
        inputs = {str(i): t for i, t in enumerate(qkv)}

        def fn(**kw):
            return F.scaled_dot_product_attention(*kw.values(), is_causal=True)
    else:
        inputs = make_inputs(batch, dim, N, L, device="cuda", dtype=dtype)
        for t in inputs.values():
            t.requires_grad_(train)
        fn = _scan_fn(impl)
        grad = torch.randn(batch, dim, L, device="cuda", dtype=dtype)

    def once():
        if train:
            fn(**inputs).backward(grad)
        else:
            with torch.no_grad():
                fn(**inputs)

    once()
    for t in inputs.values():
        t.grad = None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    once()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    ms = do_bench(once, grad_to_none=list(inputs.values()) if train else None,
                  return_mode="median")
    return {"time_s": ms / 1e3, "peak_bytes": peak}


def _cuda_bandwidth() -> float:
    """Measured device-memory bandwidth in bytes/s (a large copy: one read plus one write)."""
    from triton.testing import do_bench

    src = torch.empty(1 << 28, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = do_bench(lambda: dst.copy_(src), return_mode="median")
    return 2 * src.numel() / (ms / 1e3)


def _floor_bytes(batch, dim, N, L, elem=2) -> dict:
    """Bytes the scan must move at the least: its inputs read and its outputs written, once."""
    act, bc = batch * dim * L * elem, batch * N * L * elem
    fwd = 3 * act + 2 * bc + act  # u, delta, z, B, C in; y out
    bwd = 4 * act + 2 * bc + 3 * act + 2 * bc  # u, delta, z, dout, B, C in; du, ddelta, dz, dB, dC
    return {"fwd": fwd, "fwd+bwd": fwd + bwd}


def _fmt_time(s):
    if s is None:
        return "-"
    return f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.2f} s"


def _fmt_bytes(b):
    if b is None:
        return "-"
    return f"{b / 2**20:.1f} MiB" if b < 2**30 else f"{b / 2**30:.2f} GiB"


def add_arguments(parser):
    parser.add_argument("--lengths", type=positive_int, nargs="+", default=list(DEFAULT_LENGTHS),
                        help="sequence lengths of the batch-1 rows (default: %(default)s)")
    parser.add_argument("--batch", type=positive_int, default=1,
                        help="batch of the batch-1 rows' table (default: %(default)s)")
    parser.add_argument("--dim", type=positive_int, default=256,
                        help="channels (d_inner) of those rows (default: %(default)s)")
    parser.add_argument("--state", type=positive_int, default=16,
                        help="N, the state size (default: %(default)s)")
    parser.add_argument("--wide", type=non_negative_int, nargs=3, default=[4, 512, 4096],
                        metavar=("BATCH", "DIM", "L"),
                        help="the wider row (default: %(default)s); --wide 0 0 0 leaves it out")
    parser.add_argument("--backends", nargs="+", default=None,
                        help="implementations to run (default: materialising, torch, and triton "
                             "plus sdpa on CUDA); 'reference' is the slow oracle loop")
    parser.add_argument("--repeats", type=positive_int, default=3,
                        help="timed calls per CPU measurement (default: %(default)s)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where to time: auto is CUDA if present, else the CPU")
    parser.add_argument("--json", default="bench_scan.json", help="where to write the results")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch intra-op threads for the CPU measurements (default: torch's)")
    parser.add_argument("--timeout", type=positive_float, default=1800,
                        help="seconds allowed for one CPU measurement")


def main(args) -> int:
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    impls = args.backends
    if impls is None:
        impls = ["materialising", "torch"]
        if device == "cuda":
            impls += (["triton"] if triton_available() else []) + ["sdpa"]
    shapes = [(args.batch, args.dim, args.state, L) for L in args.lengths]
    if all(args.wide):
        shapes.append((args.wide[0], args.wide[1], args.state, args.wide[2]))
    bandwidth = _cuda_bandwidth() if device == "cuda" else None
    results = []
    header = (f"{'batch':>5} {'dim':>4} {'N':>3} {'L':>6}  {'impl':<13} {'fwd':>10} "
              f"{'fwd peak':>10} {'fwd+bwd':>10} {'f+b peak':>10} {'speedup':>8} {'mem ratio':>9}")
    threads = args.threads or torch.get_num_threads()
    print(f"selective scan on {device} ({threads} threads); speedup and mem ratio "
          f"of fwd+bwd against the materialising scan")
    print(header)
    for batch, dim, N, L in shapes:
        rows = {}
        for impl in impls:
            row = {"batch": batch, "dim": dim, "N": N, "L": L, "impl": impl, "device": device}
            for mode in ("fwd", "fwd+bwd"):
                if (device == "cpu" and impl == "materialising"
                        and _materialising_bytes(batch, dim, N, L) > 0.6 * _available_bytes()):
                    res = {"error": "skipped: would need more memory than is free"}
                elif device == "cpu":
                    spec = dict(impl=impl, batch=batch, dim=dim, N=N, L=L, mode=mode,
                                repeats=args.repeats, threads=args.threads)
                    res = _run_worker(spec, args.timeout)
                else:
                    try:
                        res = measure_cuda(impl, batch, dim, N, L, mode)
                    except torch.OutOfMemoryError:
                        torch.cuda.empty_cache()
                        res = {"error": "out of GPU memory"}
                row[mode] = res
            rows[impl] = row
            results.append(row)
        base = rows.get("materialising", {}).get("fwd+bwd", {})
        for impl, row in rows.items():
            fb = row["fwd+bwd"]
            if "time_s" in base and "time_s" in fb and impl != "materialising":
                row["speedup"] = base["time_s"] / fb["time_s"]
                row["mem_ratio"] = fb["peak_bytes"] / max(base["peak_bytes"], 1)
            speedup = f"{row['speedup']:.1f}x" if "speedup" in row else "-"
            mem = f"1/{1 / row['mem_ratio']:.1f}" if row.get("mem_ratio") else "-"
            errors = "".join(f"  [{m}: {row[m]['error']}]" for m in ("fwd", "fwd+bwd")
                             if "error" in row[m])
            print(f"{batch:>5} {dim:>4} {N:>3} {L:>6}  {impl:<13} "
                  f"{_fmt_time(row['fwd'].get('time_s')):>10} "
                  f"{_fmt_bytes(row['fwd'].get('peak_bytes')):>10} "
                  f"{_fmt_time(fb.get('time_s')):>10} {_fmt_bytes(fb.get('peak_bytes')):>10} "
                  f"{speedup:>8} {mem:>9}{errors}", flush=True)
        if bandwidth:
            floor = {m: b / bandwidth for m, b in _floor_bytes(batch, dim, N, L).items()}
            print(f"{batch:>5} {dim:>4} {N:>3} {L:>6}  {'HBM floor':<13} "
                  f"{_fmt_time(floor['fwd']):>10} {'':>10} {_fmt_time(floor['fwd+bwd']):>10}")
            results.append({"batch": batch, "dim": dim, "N": N, "L": L, "impl": "hbm_floor",
                            "device": device, "bandwidth_bytes_per_s": bandwidth,
                            "fwd": {"time_s": floor["fwd"]}, "fwd+bwd": {"time_s": floor["fwd+bwd"]}})
    _print_scaling(results)
    with open(args.json, "w") as f:
        json.dump({"device": device, "threads": threads, "results": results}, f,
                  indent=1)
    print(f"wrote {args.json}")
    return 0


def _print_scaling(results):
    """time(L) / time(L / 4) for each implementation, where both were measured (linear: 4.0)."""
    by_key = {(r["impl"], r["batch"], r["dim"], r["L"]): r for r in results}
    for (impl, batch, dim, L), row in by_key.items():
        prev = by_key.get((impl, batch, dim, L // 4))
        t, t_prev = row["fwd+bwd"].get("time_s"), prev and prev["fwd+bwd"].get("time_s")
        if impl != "hbm_floor" and t and t_prev:
            print(f"scaling {impl}: fwd+bwd time(L={L}) / time(L={L // 4}) = {t / t_prev:.2f}")


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    print(json.dumps(measure_cpu(spec["impl"], spec["batch"], spec["dim"], spec["N"], spec["L"],
                                 spec["mode"], spec["repeats"])))
