"""What a run records as it trains: loss totals between recorded rows, the rows themselves
(``metrics.csv``, the log line, TensorBoard) and their format.

A row's columns: ``epoch``, ``lr``, the mean loss parts of each step's first width (the largest,
when sampled) and of its smallest (``loss_first``, ``loss_smallest``, and for a task whose loss
has named parts, e.g. PPO's, ``policy_first``...), the mean loss over the step's widths
(``loss_mean``), throughput (``images_per_s``: the source's unit), the seconds spent in the
batches, then what the task's source adds (RL: ``step``, ``return``) and the evaluated widths'
primary metric (``top1@0.25``...).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import UsageError
from ..io import atomic_write

Row = dict[str, Any]


class LossTotals:
    """Loss parts summed over the steps since the last recorded row, kept on the device so a
    step never waits for the GPU to report a number."""

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.steps = 0
        self.samples = 0
        self.seconds = 0.0

    def add(self, parts: Sequence[Mapping[str, Tensor]], widths: Sequence[float], n: int) -> None:
        """One step's detached loss parts (one mapping per width, in ``widths``' order) over
        ``n`` samples (all ranks)."""
        smallest = parts[min(range(len(widths)), key=widths.__getitem__)]
        for suffix, chosen in (("first", parts[0]), ("smallest", smallest)):
            for key, value in chosen.items():
                self._add(f"{key}_{suffix}", value)
        self._add("loss_mean", torch.stack([p["loss"] for p in parts]).mean())
        self.steps += 1
        self.samples += n

    def _add(self, key: str, value: Tensor) -> None:
        self.sums[key] = self.sums[key] + value if key in self.sums else value

    def row(self, unit: str) -> Row:
        """The means since the last row, and the throughput in ``unit`` per second."""
        steps = max(self.steps, 1)
        row: Row = {key: float(value) / steps for key, value in self.sums.items()}
        row[f"{unit}_per_s"] = self.samples / self.seconds if self.seconds > 0 else 0.0
        row["seconds"] = self.seconds
        return row


def format_row(row: Mapping[str, Any]) -> str:
    """``epoch=3 lr=0.1 loss_first=0.4213 ...``: the log line of a row (scripts parse it)."""
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Every row so far, atomically (a column missing from a row is left empty)."""
    keys = list(dict.fromkeys(k for r in rows for k in r))

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)

    atomic_write(path, write)


def tensorboard(out: Path) -> Any:
    """A TensorBoard writer into ``out/tensorboard`` (``output.tensorboard: true``)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UsageError(
            "output.tensorboard: true needs the tensorboard package (pip install tensorboard)"
        ) from None
    return SummaryWriter(str(out / "tensorboard"))


def add_scalars(writer: Any, row: Mapping[str, Any]) -> None:
    """A row's numbers as TensorBoard scalars at its epoch."""
    for k, v in row.items():
        if k != "epoch" and isinstance(v, (int, float)):
            writer.add_scalar(k, v, row["epoch"])
    writer.flush()
