"""Crash-safe checkpoint folders: atomic writes, recovery after a kill, verified loading.

A checkpoint folder (`checkpoints/last`, `checkpoints/best`) holds the model folder that
`save_pretrained` writes, the files beside it (tokenizer.json, data_config.json) and
`trainer_state.pt` (optimizer, scheduler, step, RNG states, data position). It is never modified
in place: `mamba_bio_audio.files.write_atomic_dir` writes a hidden temporary folder, flushes
every file to disk (fsync) and swaps it in by two renames:

    write .last.tmp-XXXX/  ->  fsync files  ->  last -> last.old  ->  .last.tmp-XXXX -> last
                                                 ->  fsync the parent folder  ->  delete last.old

A SIGKILL (or power loss) at any instant leaves either `last` or, between the two renames, only
`last.old` complete on disk; `recover` puts `last.old` back and removes the temporary folders of
interrupted writes before the next write, and `find_checkpoint` falls back to it. A folder named
`last` is therefore always complete: it only ever appears through a rename.

`load_trainer_state` and `check_checkpoint` turn unreadable files (truncated, not a checkpoint)
into a `CheckpointError` naming the file, instead of a traceback from torch or safetensors.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mamba_bio_audio.errors import CheckpointError
from mamba_bio_audio.files import recover, write_atomic_dir

TRAINER_STATE = "trainer_state.pt"
WEIGHTS = "model.safetensors"

__all__ = ["TRAINER_STATE", "WEIGHTS", "atomic_save_dir", "check_checkpoint", "find_checkpoint",
           "load_trainer_state", "load_weights", "newest_checkpoint", "recover",
           "write_checkpoint"]


def atomic_save_dir(final: str | Path, write: Callable[[Path], None]) -> None:
    """`write_atomic_dir` with the errors a user can act on as CheckpointError: the folder
    cannot be created, or writing failed (disk full, read-only); the previous one is intact."""
    final = Path(final)
    started = []

    def tracked(tmp: Path) -> None:
        started.append(tmp)
        write(tmp)

    try:
        write_atomic_dir(final, tracked)
    except CheckpointError:
        raise
    except Exception as err:  # noqa: BLE001 (OSError, safetensors' and torch's own errors)
        if not started:
            raise CheckpointError(f"cannot write the checkpoint {final}: {_reason(err)}; choose "
                                  "a writable run folder (--out)") from None
        raise CheckpointError(
            f"could not write the checkpoint {final} ({_reason(err)}); is the disk full or "
            f"the folder read-only? The previous checkpoint, if any, is intact") from err


def write_checkpoint(path: Path, model, extra_files: dict, state: dict) -> None:
    """Write a checkpoint folder atomically: `model.save_pretrained`, the `extra_files`
    {name: text} and the trainer `state` (torch.save)."""
    import torch

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        for name, text in extra_files.items():
            (tmp / name).write_text(text)
        torch.save(state, tmp / TRAINER_STATE)

    atomic_save_dir(path, write)


def find_checkpoint(path: str | Path) -> Path:
    """Resolve `--resume DIR`: a checkpoint folder, or a run folder (uses checkpoints/last);
    `.old` folders left by a kill between the two renames count too."""
    path = Path(path)
    candidates = [path, path / "checkpoints" / "last", path.with_name(path.name + ".old"),
                  path / "checkpoints" / "last.old"]
    for cand in candidates:
        if (cand / TRAINER_STATE).is_file():
            return cand
    raise CheckpointError(
        f"--resume {path}: no {TRAINER_STATE} there nor in {path}/checkpoints/last; "
        f"give a run folder or one of its checkpoints/last|best folders")


def newest_checkpoint(run_dir: Path) -> tuple[int, Path] | None:
    """(step, folder) of the readable checkpoint of a run with the highest step, or None."""
    found = []
    for name in ("last", "best"):
        folder = Path(run_dir) / "checkpoints" / name
        if (folder / TRAINER_STATE).is_file():
            try:
                found.append((check_checkpoint(folder)["step"], folder))
            except CheckpointError:
                continue
    return max(found, key=lambda t: t[0]) if found else None


def load_weights(model, path: Path, device, what: str = "--resume") -> None:
    """Load `path/model.safetensors` into `model` (strict), or raise CheckpointError saying that
    the weights do not fit (other model.* settings)."""
    from safetensors.torch import load_model  # handles tied weights (stored once)

    try:
        missing, unexpected = map(sorted, load_model(model, path / WEIGHTS, strict=False,
                                                     device=str(device)))
    except (RuntimeError, KeyError) as err:
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        detail = next((ln for ln in lines if "mismatch" in ln), lines[0] if lines else "")
        raise CheckpointError(f"{what} {path}: the weights do not fit this model; was it "
                              f"trained with other model.* settings? ({detail})") from None
    if missing or unexpected:
        raise CheckpointError(f"{what} {path}: the weights do not fit this model "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")


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
