"""`mamba-bio-audio configs`: list the built-in run configs, or print one.

    mamba-bio-audio configs                    # name, command, how to run it
    mamba-bio-audio configs pretrain_hg38      # the YAML itself (copy it to start your own)
"""

from __future__ import annotations

from .run_config import builtin_configs, config_path, first_comment, load_run_config


def add_arguments(parser) -> None:
    parser.add_argument("name", nargs="?", help="print this config's YAML")


def main(args) -> int:
    if args.name:
        print(config_path(args.name).read_text(), end="")
        return 0
    rows = []
    for name, path in builtin_configs().items():
        cfg = load_run_config(path)  # every built-in config must load
        rows.append((name, cfg.command, cfg.data.kind, first_comment(path)))
    widths = [max(len(r[i]) for r in rows + [("name", "command", "data", "")]) for i in range(3)]
    print(f"{'name':<{widths[0]}}  {'command':<{widths[1]}}  {'data':<{widths[2]}}  run it with")
    for name, command, kind, comment in rows:
        print(f"{name:<{widths[0]}}  {command:<{widths[1]}}  {kind:<{widths[2]}}  {comment}")
    return 0
