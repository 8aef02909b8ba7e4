"""Every command line of the README's bash blocks (issue 14).

Each one is parsed against the CLI (its command exists, its options parse, its --config names a
built-in config and its key=value overrides resolve), and each one that can run on a CPU is run
end to end with short settings: the README's line as it is, then the overrides in SHORT (a few
steps on a few items), smaller values for the options in SMALLER, and `--out runs/...` where it
has none, all in one folder (`runs/...` paths are relative to it). It must exit 0 and print no
warning but EXPECTED_WARNINGS. The files a user brings (my_labels.csv, voice.wav, my_recordings/,
...) are stood in for by small files of the same kind (`user_files`). An example that reads
another example's run folder (`--model runs/classify-X`) runs after it, and runs it first when
it has not run yet (under `pytest -m slow`). The examples in SLOW, and those that read their
run folders, are marked slow; NOT_RUN lists the ones that are not run, each with the reason,
and RUN_ELSEWHERE the ones another test runs."""

import gzip
import os
import random
import re
import shlex
import warnings
from pathlib import Path

import pytest

from mamba_bio_audio import cli
from mamba_bio_audio.pipelines.common.run_config import RUN_COMMANDS, load_run_config

README = Path(__file__).resolve().parent.parent / "README.md"
# template words of the README, as a user fills them (None: left out)
PLACEHOLDERS = {"TASK": "selective-copy", "DIR": "runs/sweep", "OVERRIDES": None,
                "model.selective=true|false": "model.selective=true",
                # the judge of "Generation quality", made by a command quoted in the text
                "runs/cls_digits": "runs/digits",
                # made by a command quoted in the text, not in a bash block: the same model as
                # the bash block's runs/ih-v4k (induction heads, selective, the same sizes)
                "runs/synthetic-induction-heads-cpu": "runs/ih-v4k"}


def readme_commands() -> list[str]:
    """The mamba-bio-audio command lines of the README's bash blocks, after `mamba-bio-audio` or
    `torchrun ... -m mamba_bio_audio.cli` (continuations joined; comments, redirections, the
    block's own shell variables and VAR=value prefixes resolved or removed), each once."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S):
        variables = {}
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"(^|\s+)#.*$", "", line).strip().split(" > ")[0]
            assignment = re.fullmatch(r"([A-Za-z_]\w*)=(\"[^\"]*\"|'[^']*'|\S*)", line)
            if assignment:  # S="train.steps=160 ..." then $S
                variables[assignment[1]] = " ".join(shlex.split(assignment[2]))
                continue
            for name, value in variables.items():
                line = re.sub(rf"\${name}\b|\${{{name}}}", value, line)
            match = re.search(r"(?:^|&&\s*|^(?:\w+=\S+\s+)+)mamba-bio-audio\s+(.*)$"
                              r"|-m mamba_bio_audio\.cli\s+(.*)$", line)
            if match:
                command = " ".join((match[1] or match[2]).split())
                if command not in commands:
                    commands.append(command)
    return commands


COMMANDS = readme_commands()


def test_the_readme_has_examples_of_every_command():
    used = {shlex.split(c)[0] for c in COMMANDS}
    assert used >= {"pretrain", "classify", "predict", "generate", "finetune", "configs", "bench"}


@pytest.mark.parametrize("line", COMMANDS)
def test_readme_command_parses_and_resolves(line):
    argv = [PLACEHOLDERS.get(a, a) for a in shlex.split(os.path.expandvars(line))]
    argv = [a for a in argv if a is not None]
    assert argv[0] in cli.COMMANDS, f"unknown command in the README: {line}"
    _, args = cli.parse_command(argv)
    if argv[0] in RUN_COMMANDS and not args.resume:
        load_run_config(args.config or args.default_config, args.overrides, argv[0])


# ---- running the examples ----

HG38 = "hg38.fa.gz is the user's download (3 GB) and the job is sized for 8 GPUs"
NOT_RUN = {
    "pretrain --config pretrain_hg38 data.path=hg38.fa.gz train.batch_size=4 --out runs/hg38":
        f"torchrun, 8 processes; {HG38}",
    "pretrain --resume runs/hg38": "torchrun, 8 processes: resumes the hg38 job above",
    "pretrain --config pretrain_hg38 --out /shared/runs/hg38": "torchrun on 4 nodes",
    "pretrain --config pretrain_hg38 --out /shared/runs/hg38 model.d_model=2048 model.n_layer=48 "
    "train.fsdp=true": "torchrun on 4 nodes (FSDP, d_model 2048 x 48 layers)",
    "pretrain --config pretrain_hg38 --out runs/hg38-1m data.seq_len=1048576 train.batch_size=1 "
    "train.context_parallel=4": "torchrun, 4 processes, 1M-token windows",
    "pretrain --config pretrain_hg38 --out /shared/runs/hg38-4m data.seq_len=4194304 "
    "train.context_parallel=8": "torchrun on 4 nodes",
    "bench gpu --peer .peer/mamba_ssm_cuda": "a CUDA GPU and a mamba_ssm build",
}
FSDD_UNET = ("a U-Net over 1 s clips, and the run's test pass alone scores all 300 test clips "
             "of 8,000 samples: many minutes on a CPU (the config is run on 24 clips by "
             "tests/pipelines/test_evaluate_audio.py)")
NOT_RUN.update({c: FSDD_UNET for c in (
    "pretrain --config pretrain_fsdd_unet --out runs/fsdd-unet",
    "pretrain --config pretrain_fsdd_unet_lti --out runs/fsdd-unet-lti",
    "pretrain --config pretrain_fsdd_unet --out runs/fsdd-unet-cpu model.d_model=32 "
    "model.n_layer=2 model.mlp_expand=0 train.precision=fp32 train.steps=200 train.batch_size=8 "
    "train.warmup_steps=20 train.lr=4e-3 train.eval_every=100 train.eval_batches=2 "
    "train.log_every=10 train.progress=false --no-baselines",
    *(f"pretrain --config pretrain_fsdd_unet{v} --out runs/fsdd-unet{r} train.steps=2400 "
      "train.warmup_steps=200 train.eval_every=800 train.save_every=800 train.progress=false "
      "train.cuda_graph=true" for v, r in (("", ""), ("_lti", "-lti"))),
    *(f"pretrain --config pretrain_fsdd_unet --out runs/fsdd-{g} train.steps=150 "
      "train.eval_every=0 train.log_every=25 train.progress=false "
      f"train.cuda_graph={g} --no-baselines" for g in ("false", "true")))})
NOT_RUN["pretrain --config pretrain_dna_long --out runs/dna-true train.steps=180 "
        "\"train.seq_len_stages=[[0, 256, 32], [60, 1024, 8], [120, 2048, 4]]\" train.eval_every=0 "
        "train.log_every=20 train.progress=false train.cuda_graph=true --no-baselines"] = (
    "train.cuda_graph=true needs a CUDA GPU (its eager twin runs here)")
NOT_RUN.update({c: "reads the U-Net run above" for c in (
    "evaluate-audio --model runs/fsdd-unet --classifier runs/digits --n 512",
    "evaluate-audio --model runs/fsdd-unet-lti --classifier runs/digits --n 512",
    "evaluate-audio --model runs/fsdd-unet --classifier runs/digits --n 512 --out runs/eval-fsdd-unet",
    "evaluate-audio --model runs/fsdd-unet-lti --classifier runs/digits --n 512 "
    "--out runs/eval-fsdd-unet-lti",
    "evaluate-audio --model runs/fsdd-unet-cpu --classifier runs/cls_digits --n 512 "
    "--out runs/eval-fsdd-unet-cpu")})
# run by another test, with checks of their own (the converted weights)
ELSEWHERE = "tests/models/test_convert.py::test_readme_commands_run"
RUN_ELSEWHERE = {c: ELSEWHERE for c in (
    "convert hf-mamba --out our-mamba --tokenizer dna", "convert our-mamba --out hf-again --to hf",
    "convert our-mamba --out ssm-again --to mamba_ssm",
    "generate --model hf-mamba --tokenizer dna --length 1000",
    "classify --config classify_splice --init hf-mamba",
    "finetune --model ssm-mamba --recordings my_recordings/")}

TRAIN = ["train.steps=2", "train.eval_every=2", "train.warmup_steps=1", "train.batch_size=2",
         "train.eval_batches=1", "train.progress=false"]
ITEMS = ["data.train_items=64", "data.val_items=4", "data.test_items=4"]
# appended to the README's line, by command (a later key=value wins; so do later options)
SHORT = {
    "pretrain": TRAIN + ITEMS + ["markov_max_order=2"], "classify": TRAIN + ITEMS,
    "finetune": TRAIN + ITEMS,
    "synthetic": TRAIN + ["data.val_items=2", "data.val_seq_len=0", "data.test_items=2",
                          "data.test_lengths=[64]", "data.eval_tokens=128", "data.eval_chunk=64"],
    "bench scan": ["--lengths", "256", "--wide", "0", "0", "0", "--repeats", "1"],
    "bench generate": ["--positions", "16", "--steps", "2", "--warmup", "1"],
    "bench context": ["--procs", "1,2", "--start-length", "256", "--max-length", "512"],
}
LINE_SHORT = {  # the default length (2 s) and count (4)
              "generate --model runs/finetune-X/checkpoints/best --prompt voice.wav "
              "--prompt-seconds 0.5": ["--seconds", "0.1", "--n", "1"]}
# options whose README value is replaced by a small one
SMALLER = {"--n": "2", "--seconds": "0.05", "--length": "40", "--prompt-seconds": "0.05"}
# the commands whose --out is a new folder (default runs/<command>-<time>)
RUN_FOLDER_COMMANDS = {"pretrain", "classify", "finetune", "synthetic", "generate",
                       "evaluate-audio"}
# the run folders of examples without --out that other examples read
OUT = {"pretrain": "runs/pretrain-X", "classify": "runs/classify-X",
       "finetune --model runs/speech/checkpoints/best": "runs/finetune-X"}
# CPU seconds each took here with the settings above (bench: wall seconds, in subprocesses),
# measured on 2026-12-02 on the shared 2-core machine; these, and the examples that read their run
# folders, are marked slow (every other example took under 10 s)
SLOW = {
    "pretrain --config pretrain_dna_long": 12,
    "pretrain --config pretrain_audio --out runs/speech": 16,  # reads all 3,000 clips
    "classify --config classify_digits": 13,
    "classify --config classify_digits --out runs/digits": 10,
    "classify --config classify_digits_waveform": 24,
    "classify --config classify_genomic_benchmark": 47,  # scores all 902 test sequences
    "classify --config classify_genomic_benchmark --out runs/gb-nontata-plain train.steps=160 "
    "train.batch_size=16 train.eval_every=80 train.warmup_steps=16 train.progress=false": 56,
    "classify --config classify_genomic_benchmark --out runs/gb-nontata-ph train.steps=160 "
    "train.batch_size=16 train.eval_every=80 train.warmup_steps=16 train.progress=false "
    "data.rc_augment=true data.rc_test=true --no-baseline": 58,
    "classify --config classify_genomic_benchmark --out runs/gb-nontata-rc train.steps=160 "
    "train.batch_size=16 train.eval_every=80 train.warmup_steps=16 train.progress=false "
    "model.rc_equivariant=true --no-baseline": 58,
    "classify --config classify_genomic_benchmark --out runs/gb-enh-plain train.steps=160 "
    "train.batch_size=16 train.eval_every=80 train.warmup_steps=16 train.progress=false "
    "data.path=human_enhancers_cohn data.seq_len=500": 53,
    "classify --config classify_genomic_benchmark --out runs/gb-enh-ph train.steps=160 "
    "train.batch_size=16 train.eval_every=80 train.warmup_steps=16 train.progress=false "
    "data.path=human_enhancers_cohn data.seq_len=500 "
    "data.rc_augment=true data.rc_test=true --no-baseline": 57,
    "classify --config classify_genomic_benchmark --out runs/gb-enh-rc train.steps=160 "
    "train.batch_size=16 train.eval_every=80 train.warmup_steps=16 train.progress=false "
    "data.path=human_enhancers_cohn data.seq_len=500 "
    "model.rc_equivariant=true --no-baseline": 78,
    "bench context --procs 1,2,4 --budget-mib 96": 62,
    "bench scan --threads 1": 33,
}


def runnable_argv(line: str, index: int) -> list[str]:
    """The argv an example runs with here (see the module docstring)."""
    argv = [PLACEHOLDERS.get(a, a) for a in shlex.split(line)]  # $HOME: expanded when run
    argv = [a for a in argv if a is not None]
    argv = [a.split("=")[0] + "=" + PLACEHOLDERS[a.split("=", 1)[1]]
            if "=" in a and a.split("=", 1)[1] in PLACEHOLDERS else a for a in argv]
    argv = [SMALLER[argv[i - 1]] if i and argv[i - 1] in SMALLER else a
            for i, a in enumerate(argv)]
    resume = "--resume" in argv
    if not resume:
        argv += SHORT.get(argv[0], SHORT.get(" ".join(argv[:2]), [])) + LINE_SHORT.get(line, [])
    if argv[0] in RUN_FOLDER_COMMANDS and "--out" not in argv and not resume:
        argv += ["--out", OUT.get(line, f"runs/example-{index}")]
    return argv


def made_by(argv: list[str]) -> str | None:
    return argv[argv.index("--out") + 1] if "--out" in argv else None


def reads(argv: list[str], folders) -> set[str]:
    """The run folders of other examples that argv names (as a word or a key=value's value)."""
    words = [a.split("=", 1)[-1] for a in argv]
    return {f for f in folders for w in words if w == f or w.startswith(f + "/")} - {made_by(argv)}


RUN = [c for c in COMMANDS if c not in NOT_RUN and c not in RUN_ELSEWHERE]
ARGV = {c: runnable_argv(c, i) for i, c in enumerate(RUN)}
MAKER = {made_by(a): c for c, a in ARGV.items() if made_by(a)}
NEEDS = {c: [MAKER[f] for f in sorted(reads(a, MAKER))] for c, a in ARGV.items()}


def is_slow(command: str) -> bool:
    return command in SLOW or any(is_slow(c) for c in NEEDS[command])


def in_order(commands: list[str]) -> list[str]:
    """README order, each example after the examples whose run folders it reads."""
    done = []
    while len(done) < len(commands):
        done.append(next(c for c in commands if c not in done and set(NEEDS[c]) <= set(done)))
    return done


def test_the_lists_name_only_readme_commands():
    named = set(NOT_RUN) | set(RUN_ELSEWHERE) | set(SLOW) | set(OUT) | set(LINE_SHORT)
    assert named <= set(COMMANDS), named - set(COMMANDS)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A folder holding the user files the examples name; {"dir": it, "done": {command: rc}}."""
    folder = tmp_path_factory.mktemp("readme")
    user_files(folder)
    return {"dir": folder, "done": {}}


def user_files(folder: Path) -> None:
    """Small stand-ins for the files the README's examples read that a user brings."""
    import soundfile

    from mamba_bio_audio.data import FSDD_DIR, LONG_AUDIO_DIR

    rng = random.Random(0)

    def dna(n):
        return "".join(rng.choices("ACGT", k=n))

    with gzip.open(folder / "my_genome.fa.gz", "wt") as f:  # plain gzip, as NCBI's downloads
        f.write("".join(f">chr{i}\n{dna(100_000)}\n" for i in range(2)))
    (folder / "my_labels.csv").write_text(
        "sequence,label\n" + "".join(f"{dna(500)},{'ab'[i % 2]}\n" for i in range(40)))
    (folder / "genome.fa").write_text(">chr1\n" + dna(3000) + "\n>plasmid\n" + dna(1500) + "\n")
    (folder / "seqs.csv").write_text("sequence\n" + "".join(dna(1100) + "\n" for _ in range(3)))
    wave, rate = soundfile.read(sorted(FSDD_DIR.glob("*.flac"))[0])
    soundfile.write(folder / "voice.wav", wave, rate)
    (folder / "my_recordings").mkdir()
    wave, rate = soundfile.read(sorted(LONG_AUDIO_DIR.glob("*.flac"))[0], frames=200_000)
    soundfile.write(folder / "my_recordings" / "take1.wav", wave, rate)
    benchmark = folder / ".genomic_benchmarks" / "human_enhancers_ensembl"  # as the package writes
    for split, n in (("train", 30), ("test", 10)):
        for label in ("positive", "negative"):
            (benchmark / split / label).mkdir(parents=True)
            for i in range(n):
                (benchmark / split / label / f"{i}.txt").write_text(dna(500))


# warnings an example may print, about the bundled data: the UCI splice data holds 4 IUPAC codes
# (D, N, S, R in the original), read as N, said once per split; a file resampled to the config's
# rate (the 8 kHz digits for classify_digits_waveform's 2 kHz, the long recordings for finetune),
# said once per rate
EXPECTED_WARNINGS = ("character(s) other than A, C, G, T, N", "resampling to")


def run_example(command: str, workspace: dict, capsys) -> None:
    """Run the examples it reads (if not run yet), then it; fail with its last output lines."""
    for needed in NEEDS[command]:
        if needed not in workspace["done"]:
            run_example(needed, workspace, capsys)
        assert workspace["done"][needed] == 0, f"{command!r} needs {needed!r}, which failed"
    argv = [os.path.expandvars(a) for a in ARGV[command]]
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            rc = cli.main(argv)
        except SystemExit as exc:  # argparse errors
            rc = exc.code
    workspace["done"][command] = rc
    out = capsys.readouterr()
    tail = "\n".join((out.out + out.err).splitlines()[-15:])
    assert rc == 0, f"README example failed: {shlex.join(argv)}\n{tail}"
    assert "Traceback" not in out.err, tail
    shown = [str(w.message) for w in caught] + [x for x in out.err.splitlines() if "warning" in x]
    shown = [w for w in shown if not any(known in w for known in EXPECTED_WARNINGS)]
    assert not shown, f"{shlex.join(argv)} warned: {shown}"


@pytest.mark.parametrize("command", [
    pytest.param(c, marks=[pytest.mark.slow] if is_slow(c) else []) for c in in_order(RUN)])
def test_readme_example_runs(command, workspace, capsys, monkeypatch):
    monkeypatch.chdir(workspace["dir"])
    monkeypatch.setenv("HOME", str(workspace["dir"]))
    run_example(command, workspace, capsys)
