"""search.png: the searched networks against the uniform widths, metric against MACs.

Uses matplotlib's object API on an Agg canvas (no pyplot state), as the spectrum plot does.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..spectrum.providers import Metric


def _y(metric: Metric, values: Mapping[str, float] | None) -> float | None:
    if not values or metric.name not in values:
        return None
    v = values[metric.name]
    return 100 * v if metric.fraction else v


def plot_search(
    doc: Mapping[str, Any],
    candidates: Sequence[Mapping[str, Any]],
    uniform: Sequence[Mapping[str, Any]],
    metric: Metric,
    path: str | os.PathLike,
) -> Path:
    """Every measured network (grey), the uniform widths (blue line) and the front (orange),
    on the validation images; the front's test metrics (hollow orange) and the chosen network
    (star) beside them."""
    fig = Figure(figsize=(7.2, 4.8), dpi=130, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()

    def xy(rows: Sequence[Mapping[str, Any]], key: str = "metrics") -> tuple[list, list]:
        pts = [(r["macs"] / 1e6, _y(metric, r.get(key))) for r in rows]
        pts = sorted(p for p in pts if p[1] is not None)
        return [p[0] for p in pts], [p[1] for p in pts]

    ax.plot(*xy(candidates), ".", color="#bbbbbb", markersize=3, label="measured (validation)")
    ax.plot(
        *xy(uniform),
        "o-",
        color="#1f77b4",
        markersize=3,
        linewidth=1.4,
        label="uniform widths (validation)",
    )
    ax.plot(
        *xy(doc["front"]),
        "s-",
        color="#ff7f0e",
        markersize=3.5,
        linewidth=1.4,
        label=f"{doc['method']} front (validation)",
    )
    tx, ty = xy(doc["front"], "test_metrics")
    if tx:
        ax.plot(
            tx, ty, "s", markerfacecolor="none", color="#ff7f0e", markersize=5, label="front (test)"
        )
    chosen = doc.get("chosen")
    if chosen is not None:
        ax.plot(*xy([chosen]), "*", color="#d62728", markersize=13, label="chosen (validation)")
    ax.set_xlabel("MACs per input (millions)")
    ax.set_ylabel(metric.heading)
    ax.grid(True, alpha=0.35)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"{doc['model']}: searched widths against uniform ones", fontsize=11)
    path = Path(path)
    fig.savefig(path, bbox_inches="tight")
    return path
