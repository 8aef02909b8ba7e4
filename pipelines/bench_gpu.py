"""GPU benchmark of the Triton scan: floors, PyTorch scan, causal attention, decode, model training.

Run on a CUDA machine: ``mamba-bio-audio bench gpu --out docs/benchmarks_gpu.json``. Every time is
the median of CUDA-event timings (``triton.testing.do_bench``) after warm-up, over inputs rotated
among several fresh random sets. Floors: bytes that must cross HBM over the measured
device-to-device copy bandwidth, and special-function ops (exp2/log2/rcp: the exp(ΔA) of every
state element plus softplus and silu) over the measured exp2 throughput.
"""

import datetime
import json
import math
import subprocess
import time

import torch
import torch.nn.functional as F

MUFU_PER_ELEM = 4  # softplus (exp, log) and silu (exp, rcp) per (b, d, t), besides N exp(ΔA)


def add_arguments(p):
    p.add_argument("--out", default="bench_gpu.json", help="JSON results file")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--state", type=int, default=16)
    p.add_argument("--lengths", default="512,1024,2048,4096,8192,16384,32768,65536")
    p.add_argument("--long-length", type=int, default=1 << 20, help="forward-only length at batch 1")
    p.add_argument("--torch-max-length", type=int, default=16384, help="longest L for the PyTorch scan")
    p.add_argument("--tune", action="store_true", help="sweep tile configs first and use the best")
    p.add_argument("--parts", default="scan,long,decode,models",
                   help="comma list of: scan,long,decode,models")
    p.add_argument("--models", default="dna-small,audio-unet", help="model presets to time")
    p.add_argument("--model-lengths", default="1024,16384,131072", help="training lengths")
    p.add_argument("--budget-s", type=float, default=1e9, help="skip parts that start after this")


def _bench(fn, sets, rep=200):
    """Median ms of fn(inputs) over rotating input sets (CUDA events)."""
    import triton.testing
    i = [0]

    def call():
        i[0] += 1
        fn(sets[i[0] % len(sets)])
    return triton.testing.do_bench(call, warmup=25, rep=rep, return_mode="median")


def _env():
    drv = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout.strip()
    import triton
    p = torch.cuda.get_device_properties(0)
    return dict(device=torch.cuda.get_device_name(0), sms=p.multi_processor_count,
                memory_gib=round(p.total_memory / 2**30, 1), driver=drv, torch=torch.__version__,
                triton=triton.__version__, cuda=torch.version.cuda,
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


def scan_inputs(batch, dim, L, N, grad, dtype=torch.bfloat16):
    r = lambda *s: torch.randn(*s, device="cuda")  # noqa: E731
    x = dict(u=r(batch, dim, L).to(dtype), delta=(0.5 * r(batch, dim, L) - 2).to(dtype),
             A=-torch.exp(0.5 * r(dim, N)), B=r(batch, N, L).to(dtype), C=r(batch, N, L).to(dtype),
             D=r(dim), z=r(batch, dim, L).to(dtype), delta_bias=0.1 * r(dim))
    if grad:
        for v in x.values():
            v.requires_grad_(True)
        x["dy"] = r(batch, dim, L).to(dtype)
    return x


def floors(batch, dim, L, N, fl, backward=False):
    """(bytes floor ms, special-function floor ms) for the forward, or forward + backward."""
    elems = batch * dim * L
    io = 4 if not backward else 4 + 7  # fwd: u, delta, z, y; bwd adds dy, u, delta, z, du, ddelta, dz
    bc = 2 * batch * N * L * (1 if not backward else 4)
    byts = elems * io * 2 + bc * 2
    sfu = elems * (N + MUFU_PER_ELEM) * (1 if not backward else 3)  # bwd recomputes a, a_next
    return byts / fl["copy_bytes_per_s"] * 1e3, sfu / fl["exp_per_s"] * 1e3


def run_scan_rows(args, fl, impls):
    from mamba_bio_audio.kernels.selective_scan.torch_scan import selective_scan_torch
    from mamba_bio_audio.kernels.selective_scan.triton_scan import selective_scan_triton
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def fwd(fn):
        return lambda x: fn(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"],
                            delta_softplus=True)

    def fwd_bwd(fn):
        f = fwd(fn)
        return lambda x: f(x).backward(x["dy"])

    rows = []
    B, D, N = args.batch, args.dim, args.state
    heads, hd = D // 128, 128
    for L in [int(v) for v in args.lengths.split(",")]:
        row = dict(L=L, batch=B, dim=D, N=N)
        n_sets = max(2, min(4, int(8e9 // (B * D * L * 2 * 8))))
        with torch.no_grad():
            sets = [scan_inputs(B, D, L, N, False) for _ in range(n_sets)]
            row["triton_fwd_ms"] = _bench(fwd(selective_scan_triton), sets)
        del sets
        sets = [scan_inputs(B, D, L, N, True) for _ in range(2)]
        torch.cuda.reset_peak_memory_stats()
        row["triton_fwd_bwd_ms"] = _bench(fwd_bwd(selective_scan_triton), sets)
        row["triton_fwd_bwd_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        if "torch" in impls and L <= args.torch_max_length:
            row["torch_fwd_bwd_ms"] = _bench(fwd_bwd(selective_scan_torch), sets[:1], rep=100)
            row["torch_fwd_ms"] = _bench(lambda x: fwd(selective_scan_torch)(x), sets[:1], rep=100)
        del sets
        bytes_ms, sfu_ms = floors(B, D, L, N, fl)
        row.update(floor_bytes_ms=bytes_ms, floor_sfu_ms=sfu_ms,
                   fwd_over_floor=row["triton_fwd_ms"] / max(bytes_ms, sfu_ms),
                   fwd_bytes_per_s=bytes_ms / row["triton_fwd_ms"] * fl["copy_bytes_per_s"],
                   fwd_exp_per_s=sfu_ms / row["triton_fwd_ms"] * fl["exp_per_s"])
        q = [torch.randn(B, heads, L, hd, device="cuda", dtype=torch.bfloat16, requires_grad=True)
             for _ in range(3)]
        dq = torch.randn_like(q[0])
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            with torch.no_grad():
                row["attn_fwd_ms"] = _bench(lambda _: F.scaled_dot_product_attention(*q, is_causal=True),
                                            [None])
            row["attn_fwd_bwd_ms"] = _bench(
                lambda _: F.scaled_dot_product_attention(*q, is_causal=True).backward(dq), [None])
        del q, dq
        rows.append(row)
        print(_fmt_row(row), flush=True)
    return rows


def _fmt_row(r):
    t = r.get("torch_fwd_bwd_ms")
    return (f"L={r['L']:>7} fwd {r['triton_fwd_ms']:8.3f} ms (floor {max(r['floor_bytes_ms'], r['floor_sfu_ms']):7.3f},"
            f" x{r['fwd_over_floor']:.2f}) fwd+bwd {r['triton_fwd_bwd_ms']:8.3f} ms"
            f" peak {r['triton_fwd_bwd_peak_gib']:5.1f} GiB | torch f+b "
            + (f"{t:9.2f} ms (x{t / r['triton_fwd_bwd_ms']:.1f})" if t else "      -  ")
            + f" | attn fwd {r['attn_fwd_ms']:8.3f} f+b {r['attn_fwd_bwd_ms']:8.3f}"
            f" (scan/attn f+b {r['triton_fwd_bwd_ms'] / r['attn_fwd_bwd_ms']:.2f})")


def run_long(args, fl):
    from mamba_bio_audio.kernels.selective_scan.triton_scan import selective_scan_triton
    L, D, N = args.long_length, args.dim, args.state
    with torch.no_grad():
        sets = [scan_inputs(1, D, L, N, False) for _ in range(2)]
        ms = _bench(lambda x: selective_scan_triton(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"],
                                                    x["z"], x["delta_bias"], delta_softplus=True), sets)
    bytes_ms, sfu_ms = floors(1, D, L, N, fl)
    row = dict(L=L, batch=1, dim=D, N=N, triton_fwd_ms=ms, floor_bytes_ms=bytes_ms, floor_sfu_ms=sfu_ms,
               fwd_over_floor=ms / max(bytes_ms, sfu_ms))
    print(f"long: L={L} batch 1 fwd {ms:.2f} ms, floor {max(bytes_ms, sfu_ms):.2f} ms (x{row['fwd_over_floor']:.2f})")
    return row


FWD_SWEEP = {"scan": [(2, 1), (4, 1), (4, 2), (8, 2)],
             "loop": [(bd, w) for bd in (4, 8, 16, 32, 64) for w in (1, 2, 4) if bd * 16 >= 32 * w]}
BWD_SWEEP = {"scan": [(4, 2), (8, 2), (4, 4), (8, 4)],
             "loop": [(bd, w) for bd in (8, 16, 32, 64) for w in (1, 2, 4) if bd * 16 >= 32 * w]}


def tune(args, chunks=(32, 64)):
    """Sweep kernel variant, BLOCK_D and num_warps for forward and backward at each CHUNK (L=4096),
    pick the CHUNK with the fastest best-forward + best-backward, and make those the defaults."""
    from mamba_bio_audio.kernels.selective_scan import triton_scan as ts
    B, D, N, L = args.batch, args.dim, args.state, 4096
    x = scan_inputs(B, D, L, N, False)
    args_ = (x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], None, None, True)
    dy = torch.randn_like(x["u"])
    results, best = [], None

    def timed(kind, fn, **cfg):
        try:
            ms = _bench(lambda _: fn(), [None], rep=40)
        except Exception as e:  # noqa: BLE001  (a config that fails to compile is recorded and skipped)
            ms = float("inf")
            print(f"{kind} {cfg}: {type(e).__name__}: {str(e)[:200]}")
        results.append(dict(kind=kind, ms=ms, **cfg))
        return ms

    for T in chunks:
        fwd = min((timed("fwd", lambda: ts._fwd(*args_, False, bd, T, w, var), T=T, variant=var, bd=bd, w=w),
                   var, bd, w) for var, cfgs in FWD_SWEEP.items() for bd, w in cfgs)
        _, _, states, _ = ts._fwd(*args_, True, 16, T, 1, "loop")
        bwd = min((timed("bwd", lambda: ts._bwd(*args_[:10], True, states, T, dy, None, True, bd, w, var),
                         T=T, variant=var, bd=bd, w=w), var, bd, w)
                  for var, cfgs in BWD_SWEEP.items() for bd, w in cfgs)
        print(f"CHUNK={T}: best fwd {fwd}, best bwd {bwd}, sum {fwd[0] + bwd[0]:.3f} ms", flush=True)
        if best is None or fwd[0] + bwd[0] < best[0]:
            best = (fwd[0] + bwd[0], T, fwd, bwd)
    _, T, (_, fv, fbd, fw), (_, bv, bbd, bw) = best
    chosen = dict(CHUNK=T, FWD_VARIANT=fv, FWD_BLOCK_D=fbd, FWD_WARPS=fw, BWD_VARIANT=bv, BWD_BLOCK_D=bbd,
                  BWD_WARPS=bw)
    for k, v in chosen.items():
        setattr(ts, k, v)
    print(f"chosen: {chosen}", flush=True)
    return dict(sweep=results, chosen=chosen)


def run_decode(args):
    from mamba_bio_audio.kernels.state_update.triton_update import selective_state_update_triton
    out = []
    D, N = args.dim, args.state
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
        graph, stream = torch.cuda.CUDAGraph(), torch.cuda.Stream()
        with torch.cuda.stream(stream):
            step()
            with torch.cuda.graph(graph, stream=stream):
                for _ in range(100):
                    step()
        ms_graph = _bench(lambda _: graph.replay(), [None]) / 100
        out.append(dict(op="selective_state_update", batch=batch, dim=D, N=N, us_per_step=ms * 1e3,
                        us_per_step_cuda_graph=ms_graph * 1e3))
        print(f"decode kernel batch {batch}: {ms * 1e3:.2f} us/step eager, {ms_graph * 1e3:.2f} us/step in a CUDA graph")
    return out


def run_models(args):
    """Model decode steps (flat in position) and bf16 training throughput at several lengths."""
    from mamba_bio_audio import MambaConfig, MambaLM
    out = dict(step=[], train=[])
    for preset in args.models.split(","):
        cfg = MambaConfig.preset(preset)
        model = MambaLM(cfg).cuda()
        n_params = sum(p.numel() for p in model.parameters())
        model.eval()
        for batch in (1, 64):
            state = model.allocate_state(batch, "cuda")
            ids = torch.randint(0, cfg.vocab_size, (batch,), device="cuda")
            times = []
            with torch.no_grad():
                for window in range(5):
                    torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    for _ in range(200):
                        model.step(ids, state)
                    torch.cuda.synchronize()
                    times.append((time.perf_counter() - t0) / 200 * 1e6)
            row = dict(model=preset, params=n_params, batch=batch, us_per_step_by_position=times)
            out["step"].append(row)
            print(f"{preset} step batch {batch}: us/step at positions 0..1000 in windows of 200: "
                  + ", ".join(f"{t:.0f}" for t in times), flush=True)
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        for L in [int(v) for v in args.model_lengths.split(",")]:
            ids = torch.randint(0, cfg.vocab_size, (1, L + 1), device="cuda")
            torch.cuda.reset_peak_memory_stats()

            def train_step(_):
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    logits = model(ids[:, :-1])
                loss = F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten())
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
            try:
                ms = _bench(train_step, [None], rep=300)
                row = dict(model=preset, params=n_params, L=L, batch=1, ms_per_step=ms,
                           tokens_per_s=L / (ms * 1e-3),
                           peak_gib=torch.cuda.max_memory_allocated() / 2**30)
            except torch.cuda.OutOfMemoryError:
                row = dict(model=preset, L=L, batch=1, error="out of memory")
            out["train"].append(row)
            print(f"{preset} ({n_params / 1e6:.2f}M) train L={L}: {row}", flush=True)
            torch.cuda.empty_cache()
        del model, opt
    return out


def main(args) -> int:
    if not torch.cuda.is_available():
        print("bench gpu needs a CUDA device")
        return 2
    parts = set(args.parts.split(","))
    res = dict(env=_env(), args=vars(args) | {"bench_main": None})
    print(res["env"], flush=True)
    res["floors"] = fl = measure_floors()
    print(f"copy {fl['copy_bytes_per_s'] / 1e12:.2f} TB/s, exp2 {fl['exp_per_s'] / 1e12:.2f} T/s", flush=True)
    steps = [("tune", lambda: tune(args) if args.tune else None),
             ("scan", lambda: run_scan_rows(args, fl, {"torch"})), ("long", lambda: run_long(args, fl)),
             ("decode", lambda: run_decode(args)), ("models", lambda: run_models(args))]
    t_start = time.monotonic()
    for name, fn in steps:
        if name not in parts and name != "tune":
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
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1, default=lambda o: None if isinstance(o, float) and math.isinf(o) else str(o))
    return 0


if __name__ == "__main__":
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
