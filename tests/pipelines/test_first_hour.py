"""What a new user meets in the first hour (issue 14): real-world files accepted, predict's
per-record summary, a finished run resumed, fast help, no noise on the CPU."""

import csv
import json
import os
import random
import subprocess
import sys

from mamba_bio_audio.cli import main as cli

TINY = ["model.d_model=16", "model.n_layer=1", "model.d_state=4", "train.steps=2",
        "train.eval_every=2", "train.batch_size=4", "train.warmup_steps=1", "train.progress=false"]


def test_readme_labeled_example_reads_an_excel_csv(tmp_path, capsys):
    """The README's `classify data.kind=labeled ...` on a CSV saved by Excel (BOM, CRLF): the
    species config's seq-len stages do not leak into it, and predict reads the same file."""
    rng = random.Random(0)
    rows = "".join(f"{''.join(rng.choices('ACGT', k=50))},{'ab'[i % 2]}\r\n" for i in range(80))
    path = tmp_path / "my_labels.csv"
    path.write_bytes(b"\xef\xbb\xbf" + f"sequence,label\r\n{rows}".encode())
    run = tmp_path / "run"
    assert cli(["classify", "data.kind=labeled", f"data.path={path}", "data.seq_len=50",
                "--out", str(run), "--no-baseline", *TINY]) == 0
    assert cli(["predict", "--model", str(run), str(path), "--out", str(tmp_path / "p.csv")]) == 0
    assert len(list(csv.DictReader(open(tmp_path / "p.csv")))) == 80
    capsys.readouterr()
    # a finished run resumed: says so, exit 0, nothing re-run
    assert cli(["classify", "--resume", str(run)]) == 0
    out = capsys.readouterr()
    assert "complete (step 2" in out.out and "tokens/s" not in out.out + out.err


def test_predict_multi_fasta_summary(tmp_path, capsys):
    """An empty record is skipped (the others are predicted); a mostly-N window is counted as low
    quality and left out of its record's mean; the summary has one row per record and file."""
    rng = random.Random(1)
    run = tmp_path / "cls"
    assert cli(["classify", "--config", "classify_splice", "--out", str(run), *TINY,
                "--no-baseline"]) == 0
    fasta = tmp_path / "g.fa"
    fasta.write_text(f">a\n{''.join(rng.choices('ACGT', k=150))}\n>empty\n>n\n{'N' * 55}ACGTA\n")
    out = tmp_path / "p.csv"
    assert cli(["predict", "--model", str(run), str(fasta), "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out)))
    assert [r["record"] for r in rows] == ["a", "a", "a", "n"]
    assert [float(r["ambiguous"]) for r in rows][-1] > 0.9
    summary = {r["record"]: r for r in csv.DictReader(open(tmp_path / "p.summary.csv"))}
    assert set(summary) == {"(all)", "a", "n"}
    assert summary["(all)"]["windows"] == "4" and summary["(all)"]["low_quality"] == "1"
    assert summary["n"]["predicted"] == "" and summary["a"]["predicted"] != ""
    p_a = [float(v) for k, v in summary["a"].items() if k.startswith("p_")]
    mean = [sum(float(r[k]) for r in rows[:3]) / 3 for k in summary["a"] if k.startswith("p_")]
    assert max(abs(x - y) for x, y in zip(p_a, mean)) < 1e-3
    assert "empty record" in capsys.readouterr().err


def test_help_and_version_do_not_import_torch():
    code = ("import sys\nfrom mamba_bio_audio import cli\n"
            "for argv in (['--help'], ['--version']):\n"
            "    try:\n        cli.main(argv)\n    except SystemExit:\n        pass\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "mamba-bio-audio 0.1.0" in done.stdout and "COMMAND" in done.stdout


def test_cpu_commands_print_no_slow_path_warning(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "mamba_bio_audio.cli", "pretrain", "--out", str(tmp_path / "r"),
         "--no-baselines", "data.seq_len=64", "data.val_items=4", "data.test_items=4", *TINY],
        capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "SlowPathWarning" not in done.stderr and "PyTorch path" not in done.stderr


def test_species_baseline_does_not_depend_on_the_seq_len_stage(tmp_path):
    """The k-mer baseline is fitted on windows of the test length, whatever stage training
    stopped in (a 2-step run used to fit it on the first stage's 64 bp windows)."""
    def baseline_accuracy(stages):
        run = tmp_path / f"run{len(stages)}"
        assert cli(["classify", "--out", str(run), "data.seq_len=128", "data.train_items=300",
                    "data.val_items=20", "data.test_items=50", f"train.seq_len_stages={stages}",
                    *TINY]) == 0
        return json.loads((run / "summary.json").read_text())["baseline"]["accuracy"]

    assert baseline_accuracy([[0, 64], [200, 128]]) == baseline_accuracy([])


def test_configs_and_config_errors_do_not_import_torch():
    """`configs`, a bad key=value, a bad option value and an unknown option of the training
    commands answer before torch is imported (each in a fresh interpreter)."""
    cases = [(["configs"], 0), (["configs", "pretrain_hg38"], 0),
             (["pretrain", "train.lr=-1"], 2), (["classify", "data.kind=nope"], 2),
             (["finetune", "--model", "x", "train.device=bogus"], 2),
             (["classify", "--no-such-option"], 2), (["pretrain", "model.d_modell=8"], 2)]
    for argv, status in cases:
        code = ("import sys\nfrom mamba_bio_audio import cli\n"
                f"try:\n    rc = cli.main({argv!r})\nexcept SystemExit as e:\n    rc = e.code\n"
                "print('RESULT', rc, 'torch' in sys.modules)\n")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert f"RESULT {status} False" in done.stdout, (argv, done.stdout[-300:], done.stderr)


def test_the_data_layer_loads_no_model_code_and_leaves_the_environment_alone():
    code = ("import os, sys\nbefore = dict(os.environ)\nimport mamba_bio_audio.data\n"
            "loaded = [m for m in sys.modules if m.startswith(('mamba_bio_audio.models', "
            "'mamba_bio_audio.modules', 'mamba_bio_audio.kernels', 'mamba_bio_audio.pipelines'))]\n"
            "print('RESULT', loaded, dict(os.environ) == before)\n")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert "RESULT [] True" in done.stdout, done.stdout + done.stderr
