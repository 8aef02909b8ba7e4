"""Output files and folders of a command: written atomically, removed again when it fails.

A command that fails leaves nothing behind: every output folder it creates goes through
`make_output_dir`, and the console script calls `remove_unfinished_outputs` after a failure
(folders that hold a checkpoint are kept: they can be resumed).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from mamba_bio_audio.errors import ConfigError
from mamba_bio_audio.files import write_atomic

CREATED_DIRS: list[Path] = []  # output folders this process created (removed if it fails)


def make_output_dir(path: str | Path) -> Path:
    """mkdir -p `path`, remembering the folders this creates (see `remove_unfinished_outputs`)."""
    path = Path(path)
    missing = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    CREATED_DIRS.extend(reversed(missing))
    return path


def remove_unfinished_outputs() -> None:
    """After a failed command: delete the folders it created that hold no checkpoint."""
    for path in reversed(CREATED_DIRS):
        if path.is_dir() and not any(path.glob("**/checkpoints/*/config.json")):
            shutil.rmtree(path, ignore_errors=True)
    CREATED_DIRS.clear()


def write_output(path: str | Path, content) -> Path:
    """`mamba_bio_audio.files.write_atomic` into a folder that is created (and remembered) if
    missing. content: str, bytes, or a function that writes the file at the path it is given."""
    path = Path(path)
    if not path.parent.exists():
        make_output_dir(path.parent)
    return write_atomic(path, content)


def write_summary(run_dir: Path, summary: dict) -> Path:
    """Write run_dir/summary.json (atomically) and return its path."""
    return write_output(Path(run_dir) / "summary.json",
                        json.dumps(summary, indent=2, default=_jsonable) + "\n")


def _jsonable(obj):
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def check_writable(path: Path, option: str) -> None:
    """Before any compute: raise ConfigError unless a file can be written at `path` (its folder
    may not exist yet; nothing is created here)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{option} {path}: is a folder; expected a file name")
    folder = next((p for p in path.parents if p.exists()), Path("."))
    if not folder.is_dir():
        raise ConfigError(f"{option} {path}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {path}: cannot write into {folder} (permission denied)")


def check_new_run_dir(run_dir: Path, command: str = "") -> None:
    """Refuse `--out DIR` when DIR already holds a run (its results would be overwritten)."""
    if run_dir.is_file():
        raise ConfigError(f"--out {run_dir}: is a file; expected a run folder to create")
    held = [name for name in ("config.yaml", "summary.json", "checkpoints")
            if (run_dir / name).exists()]
    if held:
        hint = ("" if command in ("generate", "evaluate-audio")
                else f"continue it with --resume {run_dir}, or ")
        raise ConfigError(f"--out {run_dir}: already holds a run ({', '.join(held)}); "
                          f"{hint}give a new folder")
