"""`mamba-bio-audio configs`: list the built-in run configs, or print one.

    mamba-bio-audio configs                    # name, command, how to run it
    mamba-bio-audio configs pretrain_hg38      # the YAML itself (copy it to start your own)
"""

from __future__ import annotations

from mamba_bio_audio.config import load_yaml

from .common.run_config import RUN_COMMANDS, builtin_configs, config_path, first_comment, load_run_config


def add_arguments(parser) -> None:
    parser.add_argument("name", nargs="?", help="print this config's YAML")


def main(args) -> int:
    if args.name:
        print(config_path(args.name).read_text(), end="")
        return 0
    rows = []
    for name, path in builtin_configs().items():
        raw = load_yaml(path)
        command = str(raw.get("command", "?"))
        if command in RUN_COMMANDS:
            kind = load_run_config(path).data.kind  # every built-in config must load
        else:  # another command's own schema (e.g. synthetic)
            kind = str(raw.get("task", raw.get("data", {}).get("kind", "")))
        rows.append((name, command, kind, first_comment(path)))
    widths = [max(len(r[i]) for r in rows + [("name", "command", "data", "")]) for i in range(3)]
    print(f"{'name':<{widths[0]}}  {'command':<{widths[1]}}  {'data':<{widths[2]}}  run it with")
    for name, command, kind, comment in rows:
        print(f"{name:<{widths[0]}}  {command:<{widths[1]}}  {kind:<{widths[2]}}  {comment}")
    return 0
