"""`mamba-bio-audio bench gpu`: what runs without a GPU (argument checks, the peer loader, the
tables). The measurements themselves need CUDA and run on the GPU machines (docs/benchmarks.md)."""

import argparse

import pytest

from mamba_bio_audio.pipelines.bench import gpu as bench_gpu


def parse(*argv):
    p = argparse.ArgumentParser()
    bench_gpu.add_arguments(p)
    return p.parse_args(list(argv))


def test_default_shapes_hold_the_issue_rows():
    shapes = bench_gpu.parse_shapes(bench_gpu.DEFAULT_SHAPES, 3, "--shapes")
    for row in [(1, 256, 16384), (1, 256, 131072), (8, 256, 4096), (1, 2048, 1 << 20), (1, 5120, 8192),
                (8, 2048, 1024), (8, 2048, 65536)]:
        assert row in shapes
    assert bench_gpu.parse_model_rows(bench_gpu.DEFAULT_MODEL_ROWS) == [
        ("dna-small", 1, 131072), ("audio-unet", 1, 131072), ("dna-small", 8, 4096)]


@pytest.mark.parametrize("argv, message", [
    (["--shapes", "8x2048"], "--shapes: '8x2048' is not NxNxN"),
    (["--shapes", "8x0x16"], "--shapes: '8x0x16' is not NxNxN"),
    (["--model-rows", "dna-small"], "--model-rows: 'dna-small' is not PRESET:BATCHxL"),
    (["--parts", "scan,attn"], "--parts: unknown part(s) attn"),
])
def test_bad_options_get_one_line_and_exit_2(argv, message, capsys, tmp_path):
    out = tmp_path / "b.json"
    assert bench_gpu.main(parse(*argv, "--out", str(out))) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {message}" or (err.startswith(f"error: {message}") and "\n" not in err)
    assert not out.exists()


def test_peer_folder_without_the_kernel_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"--peer .*: expected a folder holding cuda_scan.py"):
        bench_gpu.load_peer(tmp_path)


def test_tables_show_ratios_only_with_a_peer():
    row = dict(batch=1, dim=256, L=16384, segments=64, ours_fwd_ms=0.5, ours_fwd_bwd_ms=2.0,
               ours_fwd_bwd_peak_gib=0.1, floor_bytes_ms=0.01, floor_sfu_ms=0.02, fwd_over_floor=25.0)
    alone = bench_gpu.scan_table([row])
    assert "ratio" not in alone and "| 1 x 256 | 16384 | 64 | 0.500 | 2.000 |" in alone
    peer = dict(row, peer_fwd_ms=1.0, peer_fwd_bwd_ms=1.0, peer_fwd_bwd_peak_gib=0.2, fwd_ratio=0.5,
                fwd_bwd_ratio=2.0)
    both = bench_gpu.scan_table([peer])
    assert "| 0.500 | 1.000 | 0.50 | 2.000 | 1.000 | 2.00 |" in both and "graph" not in both
    graph = bench_gpu.scan_table([dict(peer, ours_fwd_graph_ms=0.2, ours_fwd_bwd_graph_ms=0.6,
                                       peer_fwd_graph_ms=0.4, peer_fwd_bwd_graph_ms=0.5,
                                       fwd_graph_ratio=0.5, fwd_bwd_graph_ratio=1.2)])
    assert "| 0.200 / 0.600 | 0.400 / 0.500 | 0.50 / 1.20 |" in graph.splitlines()[-1]
    models = bench_gpu.model_table([dict(model="dna-small", batch=1, L=131072, ours_tokens_per_s=2e6,
                                         ours_peak_gib=1.0, peer_tokens_per_s=1e6)])
    assert "| dna-small | 1 x 131072 | 2.000M | 1.00 | 1.000M | 2.00 |" in models
    graphed = bench_gpu.model_table([dict(model="dna-small", batch=8, L=4096, ours_tokens_per_s=1e6,
                                          ours_peak_gib=1.0, peer_tokens_per_s=2e6,
                                          ours_graph_tokens_per_s=3e6, peer_graph_error="out of memory")])
    assert "graph" in graphed.splitlines()[0]
    assert graphed.splitlines()[-1].endswith("| 2.000M | 0.50 | 3.000M | out of memory | - |")


def test_kernel_table_lists_each_implementation_with_its_total():
    row = dict(batch=1, dim=256, L=16384, kernels={
        "ours": [("_bwd_recurrent_kernel", 1.0, 300.0), ("_segment_carry_kernel", 2.0, 8.5)],
        "peer": [("selective_scan_bwd_kernel<...>", 1.0, 400.0)]}, host_us={"ours": 512.25})
    lines = bench_gpu.kernel_table(row).splitlines()
    assert "1 x 256 x 16384" in lines[0]
    assert "| ours | _segment_carry_kernel | 2 | 8.5 |" in lines
    assert "| ours | total | | 308.5 |" in lines and "| peer | total | | 400.0 |" in lines
    assert "| ours | host time of the call | | 512.2 |" in lines
    assert not any(line.startswith("| peer | host") for line in lines)


def test_forward_backward_step_returns_gradients_without_accumulating():
    """The timed forward + backward returns each input's gradient and leaves .grad alone, so that
    repeated calls time the scan, not the adds of gradient accumulation (which .backward() made
    after the first call); the gradients are those of a plain backward."""
    import torch

    from mamba_bio_audio.kernels.selective_scan.naive import selective_scan_ref
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    x = dict(u=r(1, 3, 7), delta=r(1, 3, 7), A=-r(3, 4).exp(), B=r(1, 4, 7), C=r(1, 4, 7), D=r(3),
             z=r(1, 3, 7), delta_bias=r(3))
    for v in x.values():
        v.requires_grad_(True)
    x["dy"] = r(1, 3, 7)
    step = bench_gpu._forward_backward(selective_scan_ref)
    first, second = step(x), step(x)
    assert all(x[k].grad is None for k in bench_gpu.GRAD_INPUTS)
    y = selective_scan_ref(*(x[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")),
                           delta_softplus=True)
    y.backward(x["dy"])
    for k, a, b in zip(bench_gpu.GRAD_INPUTS, first, second):
        torch.testing.assert_close(a, x[k].grad, msg=k)
        torch.testing.assert_close(b, x[k].grad, msg=k)


def test_host_time_takes_the_implementations_in_turns(monkeypatch):
    """host_us calls each implementation's step once a round, in turns, so that both see the same
    host; it reports one median per implementation over all rounds but the first."""
    import torch
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    calls = []
    steps = {"ours": lambda: calls.append("ours"), "peer": lambda: calls.append("peer")}
    out = bench_gpu.host_us(steps, iters=3)
    assert calls == ["ours", "peer"] * 4
    assert set(out) == {"ours", "peer"} and all(v >= 0 for v in out.values())
