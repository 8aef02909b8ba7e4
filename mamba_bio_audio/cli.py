"""The `mamba-bio-audio` console script.

Each sub-command lives in its own module under `mamba_bio_audio.pipelines`, which provides
`add_arguments(parser)` and `main(args) -> int`. Modules are imported only when their command runs,
so that `mamba-bio-audio --help` stays fast.
"""

import argparse
import gc
import importlib
import os
import signal
import sys

# PyTorch's OpenMP threads spin while they wait by default. On a busy or shared CPU that makes
# training 10-50x slower (measured on a 2-core machine); passive waiting costs little when idle.
# Set here, before torch is first imported, for every command; a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .errors import RunComplete, UserError  # noqa: E402 (after the environment is set)

COMMANDS = {
    "pretrain": ("pretrain", "pretrain a causal LM on a reference genome or on recordings"),
    "classify": ("classify", "fine-tune a classifier on species, labeled sequences or audio clips"),
    "predict": ("predict", "apply a trained classifier to FASTA, CSV or audio files"),
    "generate": ("generate", "generate audio (WAV) or DNA (FASTA) from a trained LM"),
    "finetune": ("finetune", "continue training an LM on your own long recordings"),
    "evaluate-audio": ("evaluate_audio", "SC09-style scores (NLL, FID, IS, mIS, AM) of an audio "
                       "LM's generated clips"),
    "synthetic": ("synthetic", "selective copying and induction heads, with the LTI ablation"),
    "convert": ("convert", "convert Mamba LM checkpoints: ours, Hugging Face, mamba_ssm"),
    "configs": ("configs", "list the built-in configs"),
    "bench": ("bench", "benchmarks: scan, generate, gpu, context (print a table, write JSON)"),
}


DESCRIPTION = """Mamba selective state space models for DNA and raw audio: pretrain a DNA or
speech LM, train classifiers (species, labeled sequences, spoken digits), predict with them on
FASTA/CSV/audio files, generate DNA or audio, fine-tune on long recordings. Every command runs on
bundled data out of the box; `mamba-bio-audio COMMAND --help` lists its options."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's default after its help, unless there is none or the help says it already."""

    def _get_help_string(self, action):
        if action.default in (None, False) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `error: <command>: <what is wrong>` and exit status 2."""

    def error(self, message):
        print(f"error: {self.prog}: {one_line(message)} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = Parser(prog="mamba-bio-audio", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        parser = build_parser()
        if not argv or argv[0] in ("-h", "--help"):
            parser.print_help()
            return 0 if argv else 2
        if argv[0] == "--version":
            parser.parse_args(argv[:1])
        parser.error(f"unknown command {argv[0]!r}; choose from {', '.join(COMMANDS)}")
    module, args = parse_command(argv)  # before torch where the command allows: fast errors
    quiet_warnings()
    failed = True
    previous = signal.signal(signal.SIGTERM, _interrupt)  # clean up as after Ctrl-C
    try:
        status = int(module.main(args) or 0)
        failed = status != 0
        return status
    except RunComplete as done:
        failed = False
        print(one_line(str(done)))
        return 0
    except UserError as err:
        print(f"error: {one_line(str(err))}", file=sys.stderr)
        return 2
    except OSError as err:  # the file system said no: read-only folder, disk full, permissions
        where = f"{err.filename}: " if err.filename else ""
        print(f"error: {where}{err.strerror or one_line(str(err))} (cannot read or write this "
              "path; check the path, its permissions and the free disk space)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        if failed:
            _remove_unfinished_outputs()
        _leave_process_group()


def parse_command(argv: list[str]):
    """(the command's module, its parsed arguments) for `argv` = [command, arguments...];
    SystemExit(2) after a one-line error when the arguments do not parse."""
    name = argv[0]
    module = importlib.import_module(f"mamba_bio_audio.pipelines.{COMMANDS[name][0]}")
    parser = Parser(prog=f"mamba-bio-audio {name}", description=COMMANDS[name][1],
                    formatter_class=HelpFormatter)
    module.add_arguments(parser)
    try:  # options and positionals in any order ("pretrain --no-baselines model.d_model=64")
        return module, parser.parse_intermixed_args(argv[1:])
    except TypeError:  # commands with sub-commands (bench) cannot be parsed intermixed
        return module, parser.parse_args(argv[1:])


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _remove_unfinished_outputs() -> None:
    """A failed command leaves no output folder behind that holds no checkpoint."""
    outputs = sys.modules.get("mamba_bio_audio.pipelines.common.outputs")
    if outputs is not None:
        outputs.remove_unfinished_outputs()


_shown_warnings: set = set()


def quiet_warnings() -> None:
    """Warnings as one line each, once per process, above any progress bar; none for the CPU
    path of the scan when tensors are on the CPU (there it is the expected path)."""
    import warnings

    warnings.filterwarnings("ignore", message=r"[\w.]+: cpu tensors run on the PyTorch path")

    def show(message, category, filename, lineno, file=None, line=None):
        text = f"warning: {one_line(str(message))}"
        if text in _shown_warnings:
            return
        _shown_warnings.add(text)
        if "tqdm" in sys.modules:
            from tqdm import tqdm

            tqdm.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)

    warnings.showwarning = show


def _leave_process_group() -> None:
    """Under torchrun: destroy the process group and free the job's DDP/FSDP state now.

    The finished job's model and optimizer live on in reference cycles that hold the gloo groups;
    freed only by the interpreter's exit, gloo's threads can abort the rank ("terminate called
    without an active exception", SIGABRT) after the job has succeeded."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
        gc.collect()


def one_line(message: str) -> str:
    """Join a multi-line message into one line (the CLI prints errors as a single line)."""
    return "; ".join(part.strip() for part in message.splitlines() if part.strip())


if __name__ == "__main__":
    sys.exit(main())
