"""The figure helper: a matplotlib figure that is saved atomically when its block ends.

    with figure(path, figsize=(6, 4)) as (fig, ax):
        ax.plot(xs, ys)

Uses `matplotlib.figure.Figure` directly (no pyplot, so no global state and no backend to pick);
the file appears whole or not at all, and nothing is written when the block raises.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from .outputs import write_output


@contextlib.contextmanager
def figure(path: str | Path, nrows: int = 1, ncols: int = 1, figsize=(6, 4), dpi: int = 120,
           squeeze: bool = True):
    """Yield (fig, axes) of `nrows` x `ncols` subplots; on a clean exit, tight-layout and save to
    `path` (format from its suffix)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    axes = fig.subplots(nrows, ncols, squeeze=squeeze)
    yield fig, axes
    fig.tight_layout()
    write_output(path, lambda tmp: fig.savefig(tmp, dpi=dpi))
