"""Bad input end to end: every case goes through the console script's `main` and must end in one
line `error: <message naming the problem>`, a non-zero exit status, no traceback, and nothing
half-written in the output folder.

Each case fails before any training step (the input checks come first), so the whole matrix runs
in seconds. The fixtures are tiny real checkpoints: an LM with its trainer state (a 1-step
`pretrain` run) and a classifier (saved from a fresh model).
"""

from __future__ import annotations

import dataclasses
import os
import random
import resource
import shutil
import stat
from pathlib import Path

import pytest
import torch

from mamba_bio_audio import cli
from mamba_bio_audio.config import MambaConfig

TINY = ["model.d_model=16", "model.n_layer=1", "model.d_state=4", "data.seq_len=64",
        "data.train_items=64", "data.val_items=4", "data.test_items=4", "train.steps=1",
        "train.batch_size=4", "train.eval_every=0", "train.progress=false"]


def run_cli(argv, capsys) -> tuple[int, str]:
    """Run the console script in-process; return (exit status, stderr)."""
    capsys.readouterr()
    try:
        rc = cli.main([str(a) for a in argv])
    except SystemExit as exc:  # argparse errors
        rc = exc.code
    return rc, capsys.readouterr().err


def leftovers(folder: Path) -> list[str]:
    """Temp files or partial checkpoints under `folder` (paths relative to it)."""
    if not folder.exists():
        return []
    bad = []
    for p in folder.rglob("*"):
        name = p.name
        partial = p.is_dir() and p.parent.name == "checkpoints" and not (p / "config.json").is_file()
        if ".tmp" in name or name.endswith(".old") or partial:
            bad.append(str(p.relative_to(folder)))
    return bad


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Bad inputs and two tiny real checkpoints (an LM with trainer state, a classifier)."""
    from mamba_bio_audio.data import DNATokenizer, MuLaw
    from mamba_bio_audio.pipelines.common.model_files import save_tokenizer
    from mamba_bio_audio.pipelines.common.run_config import DataConfig

    from mamba_bio_audio.models import MambaClassifier, MambaLM

    d = tmp_path_factory.mktemp("bad")
    f = {"dir": d}
    (d / "empty.fa").write_text("")
    (d / "no_header.fa").write_text("ACGTACGTACGT\nACGTAC\n")
    (d / "binary.fa").write_bytes(bytes(range(256)) * 4)
    (d / "headers_only.fa").write_text(">chr1\n>chr2\n")
    (d / "short.fa").write_text(">chr1\nACGT\n>chr2\nACG\n")
    (d / "bad_gzip.fa.gz").write_bytes(b"this is not gzip data at all")
    (d / "empty.csv").write_text("")
    (d / "header_only.csv").write_text("sequence,label\n")
    (d / "wrong_columns.csv").write_text("dna,class\nACGTACGT,a\nTTTTACGA,b\n")
    (d / "one_class.csv").write_text("sequence,label\n" + "ACGTACGTAC,a\n" * 20)
    (d / "ragged.csv").write_text('sequence,label\nACGT,a\n"unclosed,b,c\n')
    (d / "words.txt").write_text("hello\n")
    for name in ("empty_audio", "garbage_audio", "no_audio"):
        (d / name).mkdir()
    (d / "empty_audio" / "a.wav").write_bytes(b"")
    (d / "garbage_audio" / "a.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk" * 3)
    (d / "no_audio" / "readme.txt").write_text("no recordings here\n")
    (d / "bad.yaml").write_text("command: pretrain\nmodel: {d_model: 16\n")
    (d / "list.yaml").write_text("- 1\n- 2\n")
    (d / "extra_section.yaml").write_text("command: pretrain\noptimizer: {lr: 1}\n")
    (d / "protein.fa").write_text(">sp|P69905|HBA_HUMAN\nMVLSPADKTNVKAAWGKVGAHAGEYGAEALERMFLSFPTTKTYFPHF\n")
    (d / "reads.fastq").write_text("@read1\nACGTACGTAC\n+\nIIIIIIIIII\n")
    (d / "binary.csv").write_bytes(b"sequence,label\n" + bytes(range(128, 256)) * 4)
    (d / "excel_wrong.csv").write_bytes(b"\xef\xbb\xbfdna,label\r\nACGT,a\r\n")
    rng = random.Random(0)
    (d / "ok.csv").write_text("sequence,label\n" + "".join(
        f"{''.join(rng.choices('ACGT', k=40))},{'ab'[i % 2]}\n" for i in range(60)))
    (d / "empty_seq.csv").write_text("sequence,label\nACGT,a\n,b\n")
    from Bio import bgzf

    with bgzf.BgzfWriter(str(d / "cut.fa.gz"), "wb") as w:  # BGZF, cut in the middle
        w.write((">x\n" + "".join(random.Random(0).choices("ACGT", k=200_000)) + "\n").encode())
    cut = (d / "cut.fa.gz").read_bytes()
    (d / "cut.fa.gz").write_bytes(cut[:len(cut) // 2])
    (d / "unreadable.fa").write_text(">x\nACGT\n")
    (d / "unreadable.fa").chmod(0)
    (d / "species_one").mkdir()
    (d / "species_one" / "only.fa").write_text(">x\n" + "ACGT" * 300 + "\n")

    # an LM checkpoint with trainer state: a real 1-step pretrain run
    lm_run = d / "lm_run"
    rc = cli.main(["pretrain", "--out", str(lm_run), "--no-baselines", *TINY])
    assert rc == 0
    f["lm_run"], f["lm"] = lm_run, lm_run / "checkpoints" / "last"

    # a classifier checkpoint (DNA, 3 classes), saved from a fresh model
    tok = DNATokenizer()
    cfg = MambaConfig(d_model=16, n_layer=1, d_state=4, vocab_size=tok.vocab_size, n_classes=3,
                      class_names=["a", "b", "c"])
    f["clf"] = d / "clf"
    MambaClassifier(cfg).save_pretrained(
        f["clf"], save_tokenizer(tok, DataConfig(kind="species", seq_len=64)))
    # an audio LM (mu-law vocabulary) to --init a DNA classifier from
    f["audio_lm"] = d / "audio_lm"
    mu = MuLaw(256)
    MambaLM(dataclasses.replace(cfg, vocab_size=mu.vocab_size, n_classes=0, class_names=None)
            ).save_pretrained(f["audio_lm"], save_tokenizer(mu, DataConfig(kind="audio")))

    def broken(name, edit):
        target = d / name
        shutil.copytree(f["lm"], target)
        edit(target)
        return target

    f["no_weights"] = d / "no_weights"
    shutil.copytree(f["clf"], f["no_weights"])
    (f["no_weights"] / "model.safetensors").unlink()
    f["no_config"] = broken("no_config", lambda p: (p / "config.json").unlink())
    f["no_state"] = broken("no_state", lambda p: (p / "trainer_state.pt").unlink())
    f["no_tokenizer"] = broken("no_tokenizer", lambda p: (p / "tokenizer.json").unlink())
    f["bad_json"] = broken("bad_json", lambda p: (p / "config.json").write_text("{not json"))

    def truncate(path):
        data = path.read_bytes()
        path.write_bytes(data[:len(data) // 2])

    f["cut_weights"] = broken("cut_weights", lambda p: truncate(p / "model.safetensors"))
    f["cut_state"] = broken("cut_state", lambda p: truncate(p / "trainer_state.pt"))

    def two_ranks(path):  # as if written by a 2-process torchrun job
        state = torch.load(path / "trainer_state.pt", weights_only=False)
        torch.save({**state, "world_size": 2}, path / "trainer_state.pt")

    f["two_ranks"] = broken("two_ranks", two_ranks)
    f["read_only"] = d / "read_only"
    f["read_only"].mkdir()
    f["read_only"].chmod(stat.S_IRUSR | stat.S_IXUSR)
    yield f
    f["read_only"].chmod(stat.S_IRWXU)
    (d / "unreadable.fa").chmod(stat.S_IRWXU)


def case(name, argv, *expect, out="early", marks=()):
    """out: "early" (fails before any output: no output folder or file is left),
    "late" (fails while writing: complete files may stay, temp files may not), None (no --out)."""
    return pytest.param(argv, expect, out, id=name, marks=marks)


ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


P = "pretrain"
C = "classify"
LAB = "data.kind=labeled"

# (name, argv with {placeholders} from the fixture, words the message must contain (lower case))
CASES = [
    case("fasta-missing", [P, "data.path={dir}/nope.fa", *TINY], "nope.fa"),
    case("fasta-empty", [P, "data.path={dir}/empty.fa", *TINY], "empty.fa"),
    case("fasta-no-header", [P, "data.path={dir}/no_header.fa", *TINY], "no_header.fa"),
    case("fasta-binary", [P, "data.path={dir}/binary.fa", *TINY], "binary.fa"),
    case("fasta-headers-only", [P, "data.path={dir}/headers_only.fa", *TINY], "headers_only.fa"),
    case("fasta-too-short", [P, "data.path={dir}/short.fa", *TINY], "short.fa"),
    case("fasta-bad-gzip", [P, "data.path={dir}/bad_gzip.fa.gz", *TINY], "bad_gzip.fa.gz"),
    case("csv-missing", [C, LAB, "data.path={dir}/nope.csv", *TINY], "nope.csv"),
    case("csv-empty", [C, LAB, "data.path={dir}/empty.csv", *TINY], "empty.csv"),
    case("csv-header-only", [C, LAB, "data.path={dir}/header_only.csv", *TINY], "header_only.csv"),
    case("csv-wrong-columns", [C, LAB, "data.path={dir}/wrong_columns.csv", *TINY], "sequence"),
    case("csv-one-class", [C, LAB, "data.path={dir}/one_class.csv", *TINY], "class"),
    case("csv-unclosed-quote", [C, LAB, "data.path={dir}/ragged.csv", *TINY], "ragged.csv"),
    case("species-one-class", [C, "data.path={dir}/species_one", *TINY], "class"),
    case("audio-empty-file", [P, "data.kind=audio", "data.path={dir}/empty_audio", *TINY],
         "a.wav"),
    case("audio-garbage", [P, "data.kind=audio", "data.path={dir}/garbage_audio", *TINY],
         "a.wav"),
    case("audio-no-files", [P, "data.kind=audio", "data.path={dir}/no_audio", *TINY],
         "no_audio"),
    case("config-unknown-key", [P, "model.d_modle=8"], "d_modle"),
    case("config-unknown-section", [P, "optimizer.lr=1"], "optimizer"),
    case("config-wrong-type", [P, "train.lr=fast"], "train.lr"),
    case("config-bad-value", [P, "train.steps=0"], "train.steps"),
    case("config-not-key-value", [P, "steps"], "steps"),
    case("config-bad-precision", [P, "train.precision=fp16"], "train.precision"),
    case("config-bad-cuda-graph", [P, "train.cuda_graph=maybe"], "train.cuda_graph"),
    case("cuda-graph-on-cpu", [P, "train.cuda_graph=true", *TINY], "train.cuda_graph", "cuda",
         marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is there")),
    case("config-file-missing", [P, "--config", "{dir}/nope.yaml"], "nope.yaml"),
    case("config-bad-yaml", [P, "--config", "{dir}/bad.yaml"], "bad.yaml"),
    case("config-yaml-list", [P, "--config", "{dir}/list.yaml"], "list.yaml"),
    case("config-yaml-unknown-section", [P, "--config", "{dir}/extra_section.yaml"], "optimizer"),
    case("classify-fsdp", [C, "train.fsdp=true", *TINY], "train.fsdp"),
    case("config-for-other-command", [P, "--config", "classify_species"], "classify"),
    case("unet-length-not-divisible", [P, "model.backbone=unet", "model.unet_pool=[4,4]",
                                       *TINY[:3], *TINY[4:], "data.seq_len=100"], "100", "16"),
    case("gpu-requested-none-there", [P, "train.device=cuda", *TINY], "cuda"),
    case("out-read-only", [P, "--out", "{read_only}/run", *TINY], "read_only", out=None,
         marks=pytest.mark.skipif(ROOT, reason="root writes into read-only folders")),
    case("out-is-a-file", [P, "--out", "{dir}/short.fa/run", *TINY], "short.fa", out=None),
    case("out-disk-full", [P, "--no-baselines", *TINY], "checkpoint", "disk", out="late"),
    case("resume-missing", [P, "--resume", "{dir}/nope", *TINY], "nope"),
    case("resume-no-trainer-state", [P, "--resume", "{no_state}", *TINY], "trainer_state"),
    case("resume-truncated-state", [P, "--resume", "{cut_state}", *TINY], "trainer_state"),
    case("resume-truncated-weights", [P, "--resume", "{cut_weights}", *TINY], "model.safetensors"),
    case("resume-other-model", [P, "--resume", "{lm}", "model.d_model=32", *TINY[1:]],
         "do not fit"),
    case("predict-model-missing", ["predict", "--model", "{dir}/nope", "{dir}/short.fa"], "nope"),
    case("predict-no-weights", ["predict", "--model", "{no_weights}", "{dir}/short.fa"],
         "model.safetensors"),
    case("predict-no-config", ["predict", "--model", "{no_config}", "{dir}/short.fa"],
         "config.json"),
    case("predict-config-not-json", ["predict", "--model", "{bad_json}", "{dir}/short.fa"],
         "config.json"),
    case("predict-lm-not-classifier", ["predict", "--model", "{lm}", "{dir}/short.fa"],
         "mambalm"),
    case("predict-input-missing", ["predict", "--model", "{clf}", "{dir}/nope.fa"], "nope.fa"),
    case("predict-input-empty-fasta", ["predict", "--model", "{clf}", "{dir}/empty.fa"],
         "empty.fa"),
    case("predict-input-unknown-type", ["predict", "--model", "{clf}", "{dir}/words.txt"],
         "words.txt"),
    case("predict-csv-no-column", ["predict", "--model", "{clf}", "{dir}/wrong_columns.csv"],
         "sequence"),
    case("predict-audio-to-dna-model", ["predict", "--model", "{clf}",
                                        "{dir}/garbage_audio/a.wav"], "audio"),
    case("generate-classifier-not-lm", ["generate", "--model", "{clf}"], "mambaclassifier"),
    case("generate-no-tokenizer", ["generate", "--model", "{no_tokenizer}"], "tokenizer.json"),
    case("generate-zero-samples", ["generate", "--model", "{lm}", "--n", "0"], "--n"),
    case("classify-init-other-vocab", [C, "--init", "{audio_lm}", *TINY], "vocab"),
    case("resume-other-world-size", [P, "--resume", "{two_ranks}", *TINY], "2 ranks"),
    case("finetune-dna-model", ["finetune", "--model", "{lm}"], "not an audio lm"),
    case("finetune-recordings-missing", ["finetune", "--model", "{audio_lm}", "--recordings",
                                         "{dir}/nope_dir", *TINY], "nope_dir"),
    case("generate-prompt-missing", ["generate", "--model", "{lm}", "--prompt", "{dir}/nope.fa"],
         "nope.fa"),
    case("generate-prompt-empty", ["generate", "--model", "{lm}", "--prompt", "{dir}/empty.fa"],
         "empty.fa"),
    # issue 14: the first hour of a new user
    case("labeled-csv-binary", [C, LAB, "data.path={dir}/binary.csv", *TINY], "binary.csv"),
    case("labeled-csv-excel-wrong-column", [C, LAB, "data.path={dir}/excel_wrong.csv", *TINY],
         "'sequence'", "'label'"),
    case("labeled-csv-empty-sequence", [C, LAB, "data.path={dir}/empty_seq.csv", *TINY],
         "empty_seq.csv", "line 3"),
    case("labeled-path-missing", [C, LAB, *TINY], "data.path"),
    case("fasta-fastq", [P, "data.path={dir}/reads.fastq", *TINY], "reads.fastq"),
    case("fasta-bgzf-truncated", [P, "data.path={dir}/cut.fa.gz", *TINY], "cut.fa.gz"),
    case("fasta-is-a-folder", [P, "data.path={dir}/no_audio", *TINY], "no_audio", "folder"),
    case("fasta-protein", [P, "data.path={dir}/protein.fa", *TINY], "protein.fa", "nucleotide"),
    case("fasta-unreadable", [P, "data.path={dir}/unreadable.fa", *TINY], "unreadable.fa",
         marks=pytest.mark.skipif(ROOT, reason="root reads unreadable files")),
    case("config-lr-nan", [P, "train.lr=nan", *TINY], "train.lr", "finite"),
    case("config-lr-inf", [P, "train.lr=inf", *TINY], "train.lr", "finite"),
    case("config-stage-not-int", [P, "train.seq_len_stages=[[0,abc]]", *TINY],
         "train.seq_len_stages"),
    case("config-stage-negative", [P, "train.seq_len_stages=[[0,-5]]", *TINY],
         "train.seq_len_stages"),
    case("config-stage-longer-than-window", [P, "train.seq_len_stages=[[0,128]]", *TINY],
         "128", "data.seq_len"),
    case("config-steps-not-int", [P, "train.steps=1.5"], "train.steps"),
    case("config-stages-for-fixed-windows", [C, LAB, "data.path={dir}/ok.csv",
                                            "train.seq_len_stages=[[0,32]]", *TINY],
         "seq_len_stages"),
    case("out-existing-run", [P, "--out", "{lm_run}", *TINY], "already holds a run", "--resume",
         out=None),
    case("init-classifier-not-lm", [C, "--init", "{clf}", *TINY], "classifier"),
    case("finetune-classifier", ["finetune", "--model", "{clf}", *TINY], "classifier"),
    case("predict-binary-fasta", ["predict", "--model", "{clf}", "{dir}/binary.fa"], "binary.fa"),
    case("predict-headers-only", ["predict", "--model", "{clf}", "{dir}/headers_only.fa"],
         "headers_only.fa", "no sequence"),
    case("predict-protein", ["predict", "--model", "{clf}", "{dir}/protein.fa"], "protein.fa",
         "nucleotide"),
    case("predict-fastq", ["predict", "--model", "{clf}", "{dir}/reads.fastq"], "reads.fastq"),
    case("predict-bgzf-truncated", ["predict", "--model", "{clf}", "{dir}/cut.fa.gz"],
         "cut.fa.gz"),
    case("predict-bad-gzip", ["predict", "--model", "{clf}", "{dir}/bad_gzip.fa.gz"],
         "bad_gzip.fa.gz"),
    case("predict-input-folder", ["predict", "--model", "{clf}", "{dir}/empty_audio"],
         "empty_audio", "folder"),
    case("predict-csv-binary", ["predict", "--model", "{clf}", "{dir}/binary.csv"], "binary.csv"),
    case("predict-csv-empty-sequence", ["predict", "--model", "{clf}", "{dir}/empty_seq.csv"],
         "empty_seq.csv"),
    case("predict-lm-run-folder", ["predict", "--model", "{lm_run}", "{dir}/short.fa"],
         "language model"),
    case("predict-out-read-only", ["predict", "--model", "{clf}", "{dir}/short.fa", "--out",
                                   "{read_only}/pred.csv"], "read_only", out=None,
         marks=pytest.mark.skipif(ROOT, reason="root writes into read-only folders")),
    case("predict-out-is-a-folder", ["predict", "--model", "{clf}", "{dir}/short.fa", "--out",
                                     "{dir}"], "--out", "folder", out=None),
    case("predict-out-under-a-file", ["predict", "--model", "{clf}", "{dir}/short.fa", "--out",
                                      "{dir}/short.fa/pred.csv"], "short.fa", out=None),
    case("predict-batch-size-zero", ["predict", "--model", "{clf}", "{dir}/short.fa",
                                     "--batch-size", "0"], "--batch-size"),
    case("predict-seq-len-not-int", ["predict", "--model", "{clf}", "{dir}/short.fa",
                                     "--seq-len", "abc"], "--seq-len"),
    case("predict-no-inputs", ["predict", "--model", "{clf}"], "input"),
    case("generate-top-p-above-1", ["generate", "--model", "{lm}", "--top-p", "2"], "--top-p"),
    case("generate-top-p-not-number", ["generate", "--model", "{lm}", "--top-p", "x"], "--top-p"),
    case("generate-temperature-zero", ["generate", "--model", "{lm}", "--temperature", "0"],
         "--temperature"),
    case("generate-top-k-negative", ["generate", "--model", "{lm}", "--top-k", "-1"], "--top-k"),
    case("generate-n-not-int", ["generate", "--model", "{lm}", "--n", "two"], "--n"),
    case("generate-seconds-negative", ["generate", "--model", "{audio_lm}", "--seconds", "-1"],
         "--seconds"),
    case("generate-seconds-for-dna", ["generate", "--model", "{lm}", "--seconds", "2"],
         "--seconds", "--length"),
    case("generate-length-for-audio", ["generate", "--model", "{audio_lm}", "--length", "20"],
         "--length", "--seconds"),
    case("generate-dna-model-wav-prompt", ["generate", "--model", "{lm}", "--prompt",
                                           "{dir}/garbage_audio/a.wav"], "--prompt", "fasta"),
    case("generate-audio-model-fasta-prompt", ["generate", "--model", "{audio_lm}", "--prompt",
                                               "{dir}/short.fa"], "--prompt", "recording"),
    case("generate-protein-prompt", ["generate", "--model", "{lm}", "--prompt",
                                     "{dir}/protein.fa"], "protein.fa"),
    case("generate-lm-run-folder-missing", ["generate", "--model", "{dir}/nope_run"], "nope_run"),
    case("unknown-option", [P, "--no-such-option"], "--no-such-option"),
    # the other commands: synthetic, evaluate-audio, convert, bench
    case("synthetic-unknown-task", ["synthetic", "copying"], "copying"),
    case("synthetic-jobs-zero", ["synthetic", "selective-copy", "--jobs", "0"], "--jobs"),
    case("synthetic-bad-override", ["synthetic", "selective-copy", "train.steps=0"],
         "train.steps"),
    case("evaluate-audio-model-missing", ["evaluate-audio", "--model", "{dir}/nope",
                                          "--classifier", "{clf}"], "nope"),
    case("evaluate-audio-dna-lm", ["evaluate-audio", "--model", "{lm}", "--classifier", "{clf}"],
         "audio"),
    case("evaluate-audio-lm-as-judge", ["evaluate-audio", "--model", "{audio_lm}",
                                        "--classifier", "{audio_lm}"], "--classifier"),
    case("evaluate-audio-n-one", ["evaluate-audio", "--model", "{audio_lm}", "--classifier",
                                  "{clf}", "--n", "1"], "--n"),
    case("convert-missing", ["convert", "{dir}/nope", "--out", "{dir}/converted"], "nope"),
    case("convert-not-a-checkpoint", ["convert", "{dir}/no_audio", "--out", "{dir}/converted"],
         "config.json"),
    case("bench-scan-length-zero", ["bench", "scan", "--lengths", "0"], "--lengths"),
    case("bench-scan-dim-not-int", ["bench", "scan", "--dim", "wide"], "--dim"),
    case("bench-generate-steps-zero", ["bench", "generate", "--steps", "0"], "--steps"),
    case("bench-context-width-negative", ["bench", "context", "--d-model", "-1"], "--d-model"),
    case("bench-context-procs-bad", ["bench", "context", "--procs", "1,x"], "--procs"),
    case("bench-gpu-without-gpu", ["bench", "gpu"], "cuda",
         marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is there")),
    case("unknown-command", ["pretrian"], "pretrian"),
    case("configs-unknown-name", ["configs", "nope_config"], "nope_config"),
]


@pytest.mark.parametrize("argv, expect, out", CASES)
def test_bad_input_gives_one_line_error(argv, expect, out, files, capsys, tmp_path):
    subs = {k: str(v) for k, v in files.items()}
    argv = [a.format(**subs) for a in argv]
    out_dir = tmp_path / "out"
    if out and argv[0] in ("pretrain", "classify", "finetune") and "--out" not in argv:
        argv[1:1] = ["--out", str(out_dir)]
    if out and argv[0] in ("predict", "generate"):
        argv[1:1] = ["--out", str(out_dir / ("pred.csv" if argv[0] == "predict" else "gen"))]
    if out == "late":  # disk full: files beyond 30 kB cannot be written (trainer_state.pt is)
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (30_000, hard))
        try:
            rc, err = run_cli(argv, capsys)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    else:
        rc, err = run_cli(argv, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc not in (0, None), f"exit status {rc}; stderr:\n{err}"
    assert "Traceback" not in err, err
    assert lines and lines[-1].startswith("error: "), err
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, err
    print(f"exit {rc}: {errors[0]}")  # the matrix with its messages: pytest -rP
    message = errors[0].lower()
    for word in expect:
        assert word.lower() in message, f"{word!r} not in {errors[0]!r}"
    assert leftovers(out_dir) == []
    if out == "early":  # nothing at all: not even an empty folder or a config.yaml
        assert not out_dir.exists(), sorted(str(p) for p in out_dir.rglob("*"))
    assert not any(files["dir"].glob(".*tmp*")), "temp files left beside the inputs"


def test_matrix_is_large_enough():
    assert len(CASES) >= 25
