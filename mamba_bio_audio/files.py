"""The one atomic writer: a file or a folder appears whole at its path, or not at all.

Everything this project writes goes through here: checkpoint folders, config and metrics files,
summaries, figures, predictions, BGZF copies. The content is written into a hidden temporary
beside the target (`.<name>.tmp-XXXX`, the only naming scheme, so that leftovers of a killed
write are easy to recognise), flushed to disk, and renamed into place. Light on purpose: the
model library, the data layer and the pipelines all import it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

TMP_MARK = ".tmp-"


def fsync_path(path: Path) -> None:
    """Flush a file or a folder entry to disk (folders: best effort; not all systems allow it)."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if Path(path).is_dir() else 0)
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


def write_atomic(path: str | Path, content: str | bytes | Callable[[Path], object]) -> Path:
    """Write a file whole or not at all; returns `path`. Its folder must exist.

    content: str, bytes, or a function that writes the file at the path it is given (e.g.
    matplotlib's savefig; the temporary keeps `path`'s suffix, so formats are still inferred).
    A failure removes the temporary and an OSError names `path`, not the temporary.
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}{TMP_MARK}", suffix=path.suffix,
                                dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        if isinstance(content, str):
            tmp.write_text(content)
        elif isinstance(content, bytes):
            tmp.write_bytes(content)
        else:
            content(tmp)
        fsync_path(tmp)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OSError(err.errno, err.strerror, str(path)) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def old_of(final: Path) -> Path:
    return final.with_name(final.name + ".old")


def recover(final: str | Path) -> None:
    """Repair what a kill during `write_atomic_dir` can leave behind.

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


def write_atomic_dir(final: str | Path, write: Callable[[Path], None]) -> None:
    """Write a folder through `write(tmp_dir)`, flush it, then swap it into place at `final`:

        write .final.tmp-XXXX/ -> fsync -> final -> final.old -> .final.tmp-XXXX -> final
                               -> fsync the parent folder -> delete final.old

    There is a complete folder on disk at every moment (`final`, or `<final>.old` during the
    swap; `recover` puts it back). An error in `write` deletes the temporary folder and is raised
    as it is; the previous folder is left as it was.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    recover(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}{TMP_MARK}", dir=final.parent))
    try:
        write(tmp)
        fsync_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = old_of(final)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    fsync_path(final.parent)
    shutil.rmtree(old, ignore_errors=True)
