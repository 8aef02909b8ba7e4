"""Generation speed: time per generated step at positions 1K, 16K, 64K (isotropic and U-Net).

For each model the recurrent state is primed to every position through the parallel forward over
random tokens (in chunks, carrying the state: the same path `generate` uses for a prompt), then
steps are timed in blocks of one U-Net pooling window (so that the inner stages' steps are
counted), the blocks of all positions interleaved to share any drift of a busy machine. A step is
`model.step` plus sampling. Reported: the median time per step over the blocks, its ratio to the
first position (constant time means ~1), the size of the state, and the memory growth while
stepping (CUDA: peak allocated; CPU: resident set growth). On CUDA the CUDA-graph replay of the
step (`generation.GraphedStep`, what `generate` uses there) is timed too, beside eager
`model.step`.

    mamba-bio-audio bench generate                      # both presets, 1K/16K/64K
    mamba-bio-audio bench generate --positions 1024 4096 --steps 128 --json out.json
"""

import argparse
import dataclasses
import functools
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from mamba_bio_audio import MambaConfig, MambaLM
from mamba_bio_audio.generation import GraphedStep, sample_next
from mamba_bio_audio.pipelines.common.arguments import non_negative_int, positive_int

MODELS = {"isotropic": "dna-small", "unet": "audio-unet"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS),
                        help="backbones to time: isotropic (preset dna-small), unet (audio-unet)")
    parser.add_argument("--positions", nargs="+", type=non_negative_int, default=[1024, 16384, 65536],
                        help="positions to prime the state to before timing")
    parser.add_argument("--steps", type=positive_int, default=1024,
                        help="timed steps per position (rounded up to whole pooling windows)")
    parser.add_argument("--warmup", type=non_negative_int, default=32,
                        help="untimed steps per position (default: %(default)s)")
    parser.add_argument("--batch-size", type=positive_int, default=1,
                        help="sequences decoded at once (default: %(default)s)")
    parser.add_argument("--prime-chunk", type=positive_int, default=8192,
                        help="tokens per parallel forward call while priming")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=positive_int, default=1,
                        help="CPU threads (one step's ops are too small to gain from more)")
    parser.add_argument("--no-cuda-graph", action="store_true",
                        help="on CUDA, time only eager steps (not their CUDA-graph replay)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights and tokens")
    parser.add_argument("--json", type=Path, default=Path("bench_generate.json"),
                        help="where to write the results")


def state_bytes(state) -> int:
    """Bytes held by all tensors of a (nested) recurrent state."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, (list, tuple)):
        return sum(state_bytes(s) for s in state)
    if dataclasses.is_dataclass(state):
        return sum(state_bytes(getattr(state, f.name)) for f in dataclasses.fields(state))
    return 0


def resident_bytes() -> int:
    """Resident set size of this process (Linux), 0 where unknown."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def prime(model, position: int, batch_size: int, chunk: int, generator) -> tuple:
    """A state at `position` after random tokens, and the logits of its last token."""
    P = model.config.pool_product
    chunk = max(P, chunk // P * P)
    device = model.lm_head.weight.device
    ids = torch.randint(0, model.config.vocab_size, (batch_size, position), generator=generator)
    state = model.allocate_state(batch_size)
    n_parallel = position // P * P
    logits = None
    for start in range(0, n_parallel, chunk):
        logits = model(ids[:, start:min(start + chunk, n_parallel)].to(device), state)[:, -1]
    for t in range(n_parallel, position):
        logits = model.step(ids[:, t].to(device), state)
    return state, logits


def bench_model(name: str, args, device, graph: bool) -> list:
    torch.manual_seed(args.seed)
    model = MambaLM(MambaConfig.preset(MODELS[name])).to(device).eval()
    P = model.config.pool_product
    block = P * max(1, round(16 / P))
    n_blocks = max(1, -(-args.steps // block))
    generator = torch.Generator().manual_seed(args.seed)
    sampler = torch.Generator(device=device).manual_seed(args.seed)
    runs = []
    for position in args.positions:
        t0 = time.perf_counter()
        state, logits = prime(model, position, args.batch_size, args.prime_chunk, generator)
        if graph:
            step = GraphedStep(model, state, args.batch_size, position)
        else:
            step = functools.partial(model.step, state=state)
        for _ in range(args.warmup):
            logits = step(sample_next(logits, generator=sampler))
        sync(device)
        runs.append(dict(position=position, state=state, step=step, logits=logits, times=[],
                         grow=0, prime_s=time.perf_counter() - t0))
    for _ in range(n_blocks):  # interleave positions block by block
        for run in runs:
            step, logits = run["step"], run["logits"]
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            cuda = device.type == "cuda"
            mem0 = torch.cuda.memory_allocated(device) if cuda else resident_bytes()
            sync(device)
            t0 = time.perf_counter()
            for _ in range(block):
                logits = step(sample_next(logits, generator=sampler))
            sync(device)
            run["times"].append((time.perf_counter() - t0) / block)
            mem1 = torch.cuda.max_memory_allocated(device) if cuda else resident_bytes()
            run["grow"] = max(run["grow"], mem1 - mem0)
            run["logits"] = logits
    first = statistics.median(runs[0]["times"])
    rows = []
    for run in runs:
        ms = statistics.median(run["times"]) * 1e3
        rows.append(dict(model=name, mode="graph" if graph else "eager", preset=MODELS[name],
                         params=model.num_parameters(),
                         position=run["position"], ms_per_step=ms,
                         ratio_to_first=ms / (first * 1e3),
                         state_kib=state_bytes(run["state"]) / 1024,
                         step_mem_growth_kib=run["grow"] / 1024,
                         prime_s=run["prime_s"], timed_steps=block * n_blocks))
    return rows


def main(args) -> int:
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
        torch.set_flush_denormal(True)  # a decayed state is full of denormals, slow on CPUs
    rows = []
    with torch.inference_mode():
        for name in args.models:
            graph_too = device.type == "cuda" and not args.no_cuda_graph
            for graph in ([False, True] if graph_too else [False]):
                rows.extend(bench_model(name, args, device, graph))
    header = (f"{'model':<10} {'mode':<6} {'params':>8} {'position':>9} {'ms/step':>9} "
              f"{'ratio':>6} {'state KiB':>10} {'mem growth KiB':>15} {'prime s':>8}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['model']:<10} {r['mode']:<6} {r['params'] / 1e6:>7.2f}M {r['position']:>9} "
              f"{r['ms_per_step']:>9.3f} {r['ratio_to_first']:>6.2f} {r['state_kib']:>10.1f} "
              f"{r['step_mem_growth_kib']:>15.1f} {r['prime_s']:>8.1f}")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    meta = dict(device=str(device), device_name=name,
                torch=torch.__version__, threads=torch.get_num_threads(),
                batch_size=args.batch_size)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(dict(meta=meta, rows=rows), indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0
