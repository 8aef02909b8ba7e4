"""Crash-safe checkpoint folders: atomic writes, recovery after a kill, verified loading.

A checkpoint folder (`checkpoints/last`, `checkpoints/best`) is never modified in place. A new one
is written into a hidden temporary folder beside it, every file is flushed to disk (fsync), and
only then is it swapped in by two renames:

    write .last.tmp-XXXX/  ->  fsync files  ->  last -> last.old  ->  .last.tmp-XXXX -> last
                                                 ->  fsync the parent folder  ->  delete last.old

A SIGKILL (or power loss) at any instant leaves either `last` or, between the two renames, only
`last.old` complete on disk; `recover` puts `last.old` back and removes the temporary folders of
interrupted writes before the next write, and `find_checkpoint` (trainer) falls back to it. A
folder named `last` is therefore always complete: it only ever appears through a rename.

`load_trainer_state` and `check_checkpoint` turn unreadable files (truncated, not a checkpoint)
into a `CheckpointError` naming the file, instead of a traceback from torch or safetensors.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from mamba_bio_audio.errors import CheckpointError

TRAINER_STATE = "trainer_state.pt"
WEIGHTS = "model.safetensors"
TMP_MARK = ".tmp-"


def fsync_path(path: Path) -> None:
    """Flush a file or a folder entry to disk (folders: best effort; not all systems allow it)."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """fsync every file under `folder`, then the folders themselves."""
    for root, _, names in os.walk(folder):
        for name in names:
            fsync_path(Path(root) / name)
        fsync_path(Path(root))


def old_of(final: Path) -> Path:
    return final.with_name(final.name + ".old")


def recover(final: str | Path) -> None:
    """Repair what a kill during `atomic_save_dir` can leave behind.

    `<final>.old` without `<final>` (killed between the two renames) is renamed back; `<final>.old`
    beside `<final>` and `.<final>.tmp-*` folders (killed while writing) are deleted.
    """
    final = Path(final)
    old = old_of(final)
    if old.is_dir() and not final.exists():
        os.replace(old, final)
        fsync_path(final.parent)
    elif old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
    if final.parent.is_dir():
        for stale in final.parent.glob(f".{final.name}{TMP_MARK}*"):
            shutil.rmtree(stale, ignore_errors=True)


def atomic_save_dir(final: str | Path, write: Callable[[Path], None]) -> None:
    """Write a folder through `write(tmp_dir)`, flush it, then swap it into place at `final`.

    There is a complete folder on disk at every moment (`final`, or `<final>.old` during the
    swap). An error while writing (disk full, read-only folder) deletes the temporary folder and
    raises CheckpointError; the previous checkpoint is left as it was.
    """
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        recover(final)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}{TMP_MARK}", dir=final.parent))
    except OSError as err:
        raise CheckpointError(f"cannot write the checkpoint {final}: {_reason(err)}; choose a "
                              "writable run folder (--out)") from None
    try:
        write(tmp)
        fsync_tree(tmp)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, Exception) and not isinstance(err, CheckpointError):
            raise CheckpointError(
                f"could not write the checkpoint {final} ({_reason(err)}); is the disk full or "
                f"the folder read-only? The previous checkpoint, if any, is intact") from err
        raise
    old = old_of(final)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    fsync_path(final.parent)
    shutil.rmtree(old, ignore_errors=True)


def _reason(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        return err.strerror + (f": {err.filename}" if err.filename else "")
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def load_trainer_state(folder: str | Path) -> dict:
    """torch.load the trainer state of a checkpoint folder, or raise CheckpointError."""
    import torch

    path = Path(folder) / TRAINER_STATE
    if not path.is_file():
        raise CheckpointError(f"{folder}: {TRAINER_STATE} is missing; this folder cannot be "
                              "resumed (it holds weights only)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 (truncated zip, not a torch file, unpickling)
        raise CheckpointError(f"{path} is unreadable, truncated or not a torch file "
                              f"({_reason(err)}); resume from another checkpoint "
                              "(checkpoints/best) or start again") from None
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"{path} is not a trainer state written by mamba-bio-audio")
    return state


def check_checkpoint(folder: str | Path) -> dict:
    """Read every tensor of `model.safetensors` and the trainer state; return the state.

    Raises CheckpointError naming the first file that is missing or unreadable. Used by tests
    (after every SIGKILL) and by `--resume` before anything else is set up.
    """
    from safetensors import safe_open

    folder = Path(folder)
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{folder}: {WEIGHTS} is missing")
    try:
        with safe_open(str(weights), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                f.get_tensor(key)
    except Exception as err:  # noqa: BLE001 (safetensors raises several types)
        raise CheckpointError(f"{weights} is unreadable ({_reason(err)})") from None
    return load_trainer_state(folder)
