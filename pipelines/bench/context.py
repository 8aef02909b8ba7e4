"""Context parallelism on CPU processes: the longest sequence one training step fits in a memory budget.

For each process count N (gloo under torchrun, train.context_parallel=N, one sequence split in N
slices), the sequence length doubles from --start-length while one training step (forward,
backward, AdamW) of an isotropic MambaLM keeps every process's peak resident memory growth under
--budget-mib; the table gives the longest length that fits and its step time. Each measurement is
a fresh torchrun job (peak resident memory only grows within a process).

    mamba-bio-audio bench context --procs 1,2,4 --budget-mib 256
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mamba_bio_audio.pipelines.common.arguments import positive_float, positive_int
from mamba_bio_audio.pipelines.common.outputs import write_output


def add_arguments(p):
    p.add_argument("--procs", default="1,2,4", help="comma list of process counts (default: %(default)s)")
    p.add_argument("--budget-mib", type=positive_float, default=256.0,
                   help="peak resident memory growth allowed per process, MiB (default: %(default)s)")
    p.add_argument("--start-length", type=positive_int, default=4096,
                   help="first sequence length tried; doubles from there (default: %(default)s)")
    p.add_argument("--max-length", type=positive_int, default=1 << 22, help="stop doubling here (default: %(default)s)")
    p.add_argument("--d-model", type=positive_int, default=64, help="model width (default: %(default)s)")
    p.add_argument("--n-layer", type=positive_int, default=2, help="model depth (default: %(default)s)")
    p.add_argument("--out", default="bench_context.json", help="JSON results file (default: %(default)s)")


def _torchrun() -> str:
    return shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))


def measure(nproc: int, length: int, d_model: int, n_layer: int) -> dict:
    """One fresh job: peak RSS growth (MiB, the largest over the ranks) and seconds of one step."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        args = [__file__, "--worker", str(length), str(d_model), str(n_layer), str(out)]
        cmd = ([sys.executable, *args] if nproc == 1 else
               [_torchrun(), "--standalone", f"--nproc_per_node={nproc}", *args])
        env = dict(os.environ, OMP_NUM_THREADS="1")
        env.pop("TRITON_INTERPRET", None)
        p = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if p.returncode != 0:
            tail = (p.stdout + p.stderr).strip().splitlines()[-1:] or ["(no output)"]
            raise RuntimeError(f"{nproc} processes at L={length}: {tail[0]}")
        ranks = [json.loads(Path(f"{out}.{r}").read_text()) for r in range(nproc)]
    return dict(peak_mib=max(r["peak_mib"] for r in ranks),
                step_s=max(r["step_s"] for r in ranks))


def worker(length: int, d_model: int, n_layer: int, out: str) -> None:
    """One training step at `length` (split over the torchrun ranks); writes out.<rank>."""
    import torch
    import torch.distributed as dist

    from mamba_bio_audio import MambaConfig, MambaLM
    from mamba_bio_audio.modules.context_parallel import context_parallel, new_groups
    from mamba_bio_audio.pipelines.training.losses import lm_loss

    torch.set_num_threads(1)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = 0
    if world > 1:
        dist.init_process_group("gloo")
        rank = dist.get_rank()
    torch.manual_seed(0)
    model = MambaLM(MambaConfig(d_model=d_model, n_layer=n_layer, vocab_size=12))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(0, 12, (1, length))
    cp = new_groups(world) if world > 1 else None
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with context_parallel(cp):  # the trainer's loss: this rank's slice of the window
        lm_loss(model, {"ids": ids}).loss.backward()
    opt.step()
    step_s = time.perf_counter() - t0
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024  # KiB -> MiB
    Path(f"{out}.{rank}").write_text(json.dumps(dict(peak_mib=peak, step_s=step_s)))
    if world > 1:
        dist.destroy_process_group()


def main(args) -> int:
    try:
        procs = [int(v) for v in args.procs.split(",")]
        if not procs or min(procs) < 1:
            raise ValueError
    except ValueError:
        print(f"error: --procs: expected a comma list of positive integers, got {args.procs!r}",
              file=sys.stderr)
        return 2
    if args.start_length < 2:  # --budget-mib > 0 is its argparse type's
        print("error: --start-length must be >= 2", file=sys.stderr)
        return 2
    rows = []
    for n in procs:
        best, length = None, args.start_length
        while length <= args.max_length:
            if length % n:
                length *= 2
                continue
            try:
                m = measure(n, length, args.d_model, args.n_layer)
            except RuntimeError as exc:  # the job's last line, e.g. out of memory
                print(f"error: {exc}", file=sys.stderr)
                return 1
            print(f"{n} processes, L={length:,}: peak {m['peak_mib']:.0f} MiB per process, "
                  f"step {m['step_s']:.2f} s", flush=True)
            if m["peak_mib"] > args.budget_mib:
                break
            best = dict(processes=n, longest_length=length, **m)
            length *= 2
        rows.append(best or dict(processes=n, longest_length=None))
    print(f"\n| processes | longest L within {args.budget_mib:g} MiB per process | peak MiB | step s |")
    print("|---|---|---|---|")
    for r in rows:
        if r["longest_length"] is None:
            print(f"| {r['processes']} | none from {args.start_length:,} | - | - |")
        else:
            print(f"| {r['processes']} | {r['longest_length']:,} | {r['peak_mib']:.0f} | {r['step_s']:.2f} |")
    write_output(Path(args.out), json.dumps(dict(args={k: v for k, v in vars(args).items()
                                                       if k != "bench_main"}, rows=rows), indent=1))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    else:
        import argparse

        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        add_arguments(parser)
        sys.exit(main(parser.parse_args()))
