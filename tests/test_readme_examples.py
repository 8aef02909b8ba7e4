"""Every command line the README shows is checked against the CLI (issue 14): its command exists,
its options parse, its --config names a built-in config (or --resume is given) and its key=value
overrides resolve against that config. The examples that fit a CPU test are also run end to end
by the command tests (e.g. tests/pipelines/test_first_hour.py runs the labeled-CSV example)."""

import os
import re
import shlex
from pathlib import Path

import pytest

from mamba_bio_audio import cli
from mamba_bio_audio.pipelines.common.run_config import RUN_COMMANDS, load_run_config

README = Path(__file__).resolve().parent.parent / "README.md"
PLACEHOLDERS = {"TASK": "selective-copy"}  # template words of the README, as a user fills them


def readme_commands() -> list[str]:
    """The mamba-bio-audio command lines of the README's bash blocks (continuations joined,
    comments, redirections and the torchrun prefix removed)."""
    text = README.read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            line = line.split(" > ")[0]
            match = re.search(r"(?:^mamba-bio-audio|-m mamba_bio_audio\.cli)\s+(.*)$", line)
            if match and not line.startswith("#"):
                commands.append(os.path.expandvars(match.group(1)))
    return commands


COMMANDS = readme_commands()


def test_the_readme_has_examples_of_every_command():
    used = {shlex.split(c)[0] for c in COMMANDS}
    assert used >= {"pretrain", "classify", "predict", "generate", "finetune", "configs", "bench"}


@pytest.mark.parametrize("line", COMMANDS)
def test_readme_command_parses_and_resolves(line):
    argv = [PLACEHOLDERS.get(a, a) for a in shlex.split(line)]
    assert argv[0] in cli.COMMANDS, f"unknown command in the README: {line}"
    _, args = cli.parse_command(argv)
    if argv[0] in RUN_COMMANDS and not args.resume:
        load_run_config(args.config or args.default_config, args.overrides, argv[0])
