"""A 1 GB FASTA is indexed and sampled in bounded memory (slow: writes 1 GB to a temp folder)."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

GB = 1 << 30


def write_big_fasta(path, n_records=2, width=80, block=80 << 18, seed=0):
    """About 1 GB of random ACGT (with a few lower-case and N runs), written block by block."""
    rng = np.random.default_rng(seed)
    letters = np.frombuffer(b"ACGTacgtNN", dtype=np.uint8)
    per_record = -(-GB // n_records // block) * block
    with open(path, "wb") as f:
        for r in range(n_records):
            f.write(f">chr{r + 1} synthetic\n".encode())
            for _ in range(per_record // block):
                seq = letters[rng.choice(10, size=block, p=[0.2] * 4 + [0.045] * 4 + [0.01] * 2)]
                rows = np.full((block // width, width + 1), ord("\n"), dtype=np.uint8)
                rows[:, :width] = seq.reshape(-1, width)
                f.write(rows.tobytes())
    return per_record


@pytest.mark.slow
def test_one_gigabyte_fasta_sampled_in_bounded_memory(tmp_path):
    path = tmp_path / "big.fa"
    per_record = write_big_fasta(path)
    assert path.stat().st_size > GB
    script = textwrap.dedent(f"""
        import re
        import torch
        from mamba_bio_audio.data import GenomeWindows
        def status_mb(key):
            with open("/proc/self/status") as f:
                return int(re.search(key + r":\\s+(\\d+) kB", f.read()).group(1)) / 1024
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # restart the peak-RSS (VmHWM) count from here
        base = status_mb("VmRSS")
        splits = {{"train": ["chr1"], "test": ["chr2"]}}
        train = GenomeWindows({str(path)!r}, 32768, "train", records=splits,
                              num_samples=64, seed=0)
        val = GenomeWindows({str(path)!r}, 32768, "test", records=splits,
                            max_windows=64)
        loader = torch.utils.data.DataLoader(train, batch_size=8)
        total = sum(int(batch["ids"].numel()) for batch in loader)
        total += sum(int(val[i]["ids"].numel()) for i in range(len(val)))
        peak = status_mb("VmHWM")
        assert train.fasta.lengths == {{"chr1": {per_record}, "chr2": {per_record}}}
        print(total, peak - base)
    """)
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=900
    )
    assert out.returncode == 0, out.stderr
    total, extra_mb = out.stdout.split()
    print(f"1 GB FASTA: {extra_mb} MB above baseline")
    assert int(total) == 128 * 32768
    assert float(extra_mb) < 300, (
        f"sampling a 1 GB FASTA used {extra_mb} MB above the interpreter's baseline"
    )
