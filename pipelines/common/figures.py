"""The figure helper: a matplotlib figure that is saved atomically when its block ends.

    with figure(path, figsize=(6, 4)) as (fig, ax):
        ax.plot(xs, ys)

Uses `matplotlib.figure.Figure` directly (no pyplot, so no global state and no backend to pick);
the file appears whole or not at all, and nothing is written when the block raises.
`plot_audio` draws audio clips with it (generate, evaluate-audio).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

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


def plot_audio(waves: list, rate: int, path: Path) -> Path:
    """Waveform (left) and log spectrogram (right) of each sample, one row per sample."""
    with figure(path, len(waves), 2, figsize=(10, 2.2 * len(waves)), dpi=100,
                squeeze=False) as (fig, axes):
        for (ax_w, ax_s), w in zip(axes, waves):
            w = np.asarray(w)
            ax_w.plot(np.arange(len(w)) / rate, w, lw=0.4)
            ax_w.set_xlabel("seconds")
            ax_w.set_ylim(-1, 1)
            # a -140 dB dither floor: digital silence (the padding of a clip) has a finite level
            floor = 1e-7 * np.random.default_rng(0).standard_normal(len(w))
            *_, image = ax_s.specgram(w + floor, Fs=rate, NFFT=256, noverlap=128, cmap="magma")
            fig.colorbar(image, ax=ax_s, label="power (dB)")
            ax_s.set_xlabel("seconds")
            ax_s.set_ylabel("Hz")
    return path
