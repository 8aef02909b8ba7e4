"""The run's metrics: `metrics.csv` (rewritten atomically at every row), TensorBoard when it is
installed, and the loss curve PNG."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ..common.figures import figure
from ..common.outputs import write_output


class MetricsLog:
    """The rows logged so far (`history`), kept in `<run>/metrics.csv` and TensorBoard."""

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)
        self.history: list[dict] = []
        self._tb = None

    def open_tensorboard(self) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return
        self._tb = SummaryWriter(log_dir=str(self.out_dir / "tensorboard"))

    def restore(self, step: int) -> None:
        """On resume: the rows of metrics.csv up to `step` (a killed run may have logged more)."""
        self.history = [r for r in read_metrics(self.out_dir / "metrics.csv")
                        if int(r["step"]) <= step]

    def log(self, row: dict) -> None:
        self.history.append(row)
        write_metrics(self.out_dir / "metrics.csv", self.history)
        if self._tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, row["step"])

    def plot(self) -> None:
        """Write loss_curve.png (train and validation loss against step)."""
        if self.history:
            plot_loss_curve(self.history, self.out_dir / "loss_curve.png")

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def write_metrics(path: Path, rows: list[dict]) -> None:
    """Write rows as CSV (union of the columns, in first-seen order), atomically."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    write_output(path, buffer.getvalue())


def read_metrics(path: Path) -> list[dict]:
    """Read metrics.csv back (values as float where they parse); [] when there is none."""
    if not Path(path).is_file():
        return []
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            parsed = {}
            for k, v in row.items():
                if v == "":
                    continue
                try:
                    parsed[k] = float(v) if k != "step" else int(v)
                except ValueError:
                    parsed[k] = v
            rows.append(parsed)
    return rows


def plot_loss_curve(rows: list[dict], path: Path, ylabel: str = "loss (nats)", scale: float = 1.0,
                    lines: dict | None = None) -> None:
    """Plot train_loss and val_loss (times `scale`, e.g. 1/ln 2 for bits) against step into a PNG
    (written atomically), with horizontal `lines` {label: value} (e.g. a baseline)."""
    with figure(path, figsize=(6, 4)) as (fig, ax):
        for key, label in (("train_loss", "train"), ("val_loss", "validation")):
            pts = [(r["step"], float(r[key]) * scale) for r in rows if key in r and r[key] != ""]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, label=label, marker="o" if key == "val_loss" else None, ms=3)
        for (label, value), color in zip((lines or {}).items(),
                                         ("tab:red", "tab:purple", "tab:gray")):
            ax.axhline(value, color=color, linestyle="--", linewidth=1, label=label)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
