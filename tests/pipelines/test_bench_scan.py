"""`mamba-bio-audio bench scan`: its materialising baseline computes the same scan, and the
command prints a table and writes JSON (tiny shapes here; the real run is a command)."""

import argparse
import json

import torch

from mamba_bio_audio.kernels.selective_scan.naive import selective_scan_ref
from mamba_bio_audio.pipelines.bench import scan as bench_scan


def test_materialising_baseline_matches_reference():
    x = bench_scan.make_inputs(batch=2, dim=8, N=4, L=50)
    leaves = {k: v.double().requires_grad_() for k, v in x.items()}
    y = bench_scan.materialising_scan(**leaves)
    want = selective_scan_ref(**leaves, delta_softplus=True)
    torch.testing.assert_close(y, want, rtol=1e-10, atol=1e-10)
    grads = torch.autograd.grad(y.sum(), list(leaves.values()))
    want_grads = torch.autograd.grad(want.sum(), list(leaves.values()))
    for name, got, ref in zip(leaves, grads, want_grads):
        torch.testing.assert_close(got, ref, rtol=1e-8, atol=1e-8,
                                   msg=lambda m, name=name: f"d{name}: {m}")


def test_worker_subprocess_reports_time_and_memory():
    spec = dict(impl="torch", batch=1, dim=8, N=4, L=64, mode="fwd+bwd", repeats=2, threads=1)
    res = bench_scan._run_worker(spec, timeout=300)
    assert res["time_s"] > 0 and res["peak_bytes"] >= 0, res


def test_command_prints_table_and_writes_json(tmp_path, capsys, monkeypatch):
    """The command's table and JSON, with the measurements run in this process (the worker
    subprocess is tested above)."""
    monkeypatch.setattr(bench_scan, "_run_worker", lambda spec, timeout: bench_scan.measure_cpu(
        spec["impl"], spec["batch"], spec["dim"], spec["N"], spec["L"], spec["mode"], spec["repeats"]))
    parser = argparse.ArgumentParser()
    bench_scan.add_arguments(parser)
    out = tmp_path / "scan.json"
    args = parser.parse_args(["--lengths", "32", "128", "--wide", "0", "0", "0", "--repeats", "1",
                              "--backends", "materialising", "torch", "--device", "cpu",
                              "--json", str(out)])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny shapes: threads only add synchronisation
    try:
        assert bench_scan.main(args) == 0
    finally:
        torch.set_num_threads(threads)
    table = capsys.readouterr().out
    assert "materialising" in table and "scaling torch" in table
    rows = json.loads(out.read_text())["results"]
    assert [(r["impl"], r["L"]) for r in rows] == [("materialising", 32), ("torch", 32),
                                                   ("materialising", 128), ("torch", 128)]
    for row in rows:
        for mode in ("fwd", "fwd+bwd"):
            assert row[mode]["time_s"] > 0 and row[mode]["peak_bytes"] >= 0, row
    assert rows[3]["speedup"] > 0 and rows[3]["mem_ratio"] >= 0
