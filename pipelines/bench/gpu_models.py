"""`bench gpu`'s whole-model rows: training throughput of MambaLM presets on a GPU, with the
peer's (mamba_ssm's) scan swapped into the mixer when it is given (``--model-rows``)."""

import json
from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F


@contextmanager
def scan_swapped_into_mixer(peer):
    """The model's mixer calls the peer's scan instead of ours (for the whole-model rows)."""
    from mamba_bio_audio.modules import mixer

    def peer_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                  initial_state=None, return_final_state=False, seq_idx=None, **_):
        if initial_state is not None or seq_idx is not None:
            raise ValueError("the peer's scan takes neither initial_state nor seq_idx")
        return peer(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_final_state)

    ours, mixer.selective_scan = mixer.selective_scan, peer_scan
    try:
        yield
    finally:
        mixer.selective_scan = ours


def train_step_row(preset, batch, L, graph=False):
    """bf16-autocast AdamW training steps of MambaLM(preset) on random tokens: tokens/s, peak GiB.

    graph: the whole step (forward, loss, backward, AdamW) captured once in a CUDA graph and
    replayed, as `train.cuda_graph` does it (the trainer's GraphedStep, capturable AdamW): the
    step's GPU time without the host's launch work."""
    from mamba_bio_audio import MambaConfig, MambaLM
    from mamba_bio_audio.pipelines.training.cuda_graph import GraphedStep

    from .gpu import _bench  # the timing helper of every row of bench gpu

    torch.manual_seed(0)
    cfg = MambaConfig.preset(preset)
    model = MambaLM(cfg).cuda().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, capturable=graph)
    ids = torch.randint(0, cfg.vocab_size, (batch, L + 1), device="cuda")

    def forward_backward_update(ids):
        with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=not graph):
            logits = model(ids[:, :-1])
        loss = F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()
        opt.step()

    def step(_):
        forward_backward_update(ids)
        opt.zero_grad(set_to_none=True)

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()  # before the capture: the peak holds the graph's pool
    if graph:
        graphed = GraphedStep(forward_backward_update, model, opt)
        step = lambda _: graphed(ids)  # noqa: E731  (the first call captures)
    ms = _bench(step, [None], rep=300)
    return dict(ms_per_step=ms, tokens_per_s=batch * L / (ms * 1e-3),
                peak_gib=torch.cuda.max_memory_allocated() / 2**30,
                params=model.num_parameters())


def model_table(rows):
    peer = any("peer_tokens_per_s" in r for r in rows)
    graph = any("ours_graph_tokens_per_s" in r for r in rows)
    head = ["model", "batch x L", "ours tokens/s", "ours peak GiB"]
    head += ["mamba_ssm scan tokens/s", "ours / mamba_ssm"] if peer else []
    if graph:
        head += ["ours tokens/s, step in a CUDA graph"]
        head += ["mamba_ssm scan, step in a CUDA graph", "graph: ours / mamba_ssm"] if peer else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["model"], f"{r['batch']} x {r['L']}"]
        if "ours_error" in r:
            cells += [r["ours_error"], "-"]
        else:
            cells += [f"{r['ours_tokens_per_s'] / 1e6:.3f}M", f"{r['ours_peak_gib']:.2f}"]
        if peer:
            if "peer_tokens_per_s" in r:
                ratio = (f"{r['ours_tokens_per_s'] / r['peer_tokens_per_s']:.2f}"
                         if "ours_tokens_per_s" in r else "-")
                cells += [f"{r['peer_tokens_per_s'] / 1e6:.3f}M", ratio]
            else:
                cells += [r.get("peer_error", "-"), "-"]
        if graph:
            for name in ("ours", "peer") if peer else ("ours",):
                tps = r.get(f"{name}_graph_tokens_per_s")
                cells.append(f"{tps / 1e6:.3f}M" if tps else r.get(f"{name}_graph_error", "-"))
            if peer:
                both = r.get("ours_graph_tokens_per_s") and r.get("peer_graph_tokens_per_s")
                cells.append(f"{r['ours_graph_tokens_per_s'] / r['peer_graph_tokens_per_s']:.2f}"
                             if both else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_models(args, peer):
    """Whole-model training throughput; with a peer, the same model with the peer's scan swapped in."""
    from .gpu import parse_model_rows

    rows = []
    for preset, batch, L in parse_model_rows(args.model_rows):
        row = dict(model=preset, batch=batch, L=L)
        for graph in (False, True) if args.graph else (False,):
            for name in ("ours", "peer") if peer else ("ours",):
                key = f"{name}_graph" if graph else name
                try:
                    with scan_swapped_into_mixer(peer) if name == "peer" else nullcontext():
                        res = train_step_row(preset, batch, L, graph)
                    row.update({f"{key}_{k}": v for k, v in res.items()})
                except torch.cuda.OutOfMemoryError:
                    row[f"{key}_error"] = "out of memory"
                except RuntimeError as exc:  # a capture that fails: said in its cell, the rest run
                    if not graph:
                        raise
                    row[f"{key}_error"] = f"capture failed: {str(exc).splitlines()[0][:60]}"
                torch.cuda.empty_cache()
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(model_table(rows), flush=True)
    return rows


