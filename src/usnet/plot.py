"""Plots of spectra (matplotlib): quality against MACs and against latency, with baselines.

Uses matplotlib's object API on an Agg canvas, never ``pyplot``: no global backend or figure
state is touched, so plotting works headless and inside other programs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .metric_providers import Metric
from .spectrum import Spectrum, SpectrumRow
from .spectrum_tables import threads

#: Marker and line style per baseline kind (the paper draws fixed-width models as points).
_STYLE = {
    "individual": dict(marker="s", linestyle="none", markersize=8),
    "switches": dict(marker="^", linestyle="none", markersize=9),
    "us": dict(marker=".", linestyle="--", markersize=6, linewidth=1.2),
}
_COLORS = ("#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def _value(metric: Metric, row: SpectrumRow) -> float | None:
    v = row.metrics.get(metric.name)
    if v is None:
        return None
    return 100 * v if metric.fraction else v


def _points(
    spectrum: Spectrum, x: str, metric: Metric | None
) -> tuple[list[float], list[float], list[SpectrumRow]]:
    xs, ys, rows = [], [], []
    for r in sorted(spectrum.rows, key=lambda r: r.macs):
        xv = r.macs / 1e6 if x == "macs" else r.latency_ms
        yv = _value(metric, r) if metric is not None else r.latency_ms
        if xv is None or yv is None:
            continue
        xs.append(xv)
        ys.append(yv)
        rows.append(r)
    return xs, ys, rows


def _label_some(ax: Axes, xs: list[float], ys: list[float], rows: list[SpectrumRow]) -> None:
    """Write the width next to a few points: the ends and about four between, none crowded."""
    n = len(rows)
    if n == 0:
        return
    step = max(1, round((n - 1) / 5))
    order = [0, n - 1] + [i for i in range(step, n - 1, step)]  # ends first: they always show
    span_x = (max(xs) - min(xs)) or 1.0
    span_y = (max(ys) - min(ys)) or 1.0
    placed: list[tuple[float, float]] = []
    for i in dict.fromkeys(order):
        px, py = (xs[i] - min(xs)) / span_x, (ys[i] - min(ys)) / span_y
        if any(abs(px - qx) < 0.09 and abs(py - qy) < 0.06 for qx, qy in placed):
            continue  # would overlap a label already written
        placed.append((px, py))
        ax.annotate(
            rows[i].label,
            (xs[i], ys[i]),
            textcoords="offset points",
            xytext=(4, -11),
            fontsize=7.5,
            color="#1f4e79",
        )


def _panel(ax: Axes, spectrum: Spectrum, x: str, metric: Metric | None) -> None:
    xs, ys, rows = _points(spectrum, x, metric)
    # The curve joins the widths in order of MACs; measured latency is not monotone in width
    # (kernels change with channel counts), so that panel shows the points alone.
    ax.plot(
        xs,
        ys,
        marker="o",
        markersize=3.5 if x == "macs" else 4.5,
        linewidth=1.6,
        linestyle="-" if x == "macs" else "none",
        color="#1f77b4",
        label=spectrum.label,
        zorder=3,
    )
    _label_some(ax, xs, ys, rows)
    by_label: dict[str, tuple[str, list[float], list[float]]] = {}
    for b in spectrum.baselines:
        bx, by, _ = _points(b, x, metric)
        kind, px, py = by_label.setdefault(b.label, (b.kind, [], []))
        px.extend(bx)
        py.extend(by)
    for i, (label, (kind, px, py)) in enumerate(by_label.items()):
        order = sorted(range(len(px)), key=px.__getitem__)
        ax.plot(
            [px[j] for j in order],
            [py[j] for j in order],
            color=_COLORS[i % len(_COLORS)],
            label=label,
            zorder=4,
            **_STYLE.get(kind, _STYLE["us"]),
        )
    if metric is not None:
        for j, (name, values) in enumerate(spectrum.references.items()):
            if metric.name in values:
                v = values[metric.name] * (100 if metric.fraction else 1)
                ax.axhline(
                    v,
                    color="grey",
                    linestyle=":" if j else "-.",
                    linewidth=1,
                    label=f"{name} ({v:.4g})",
                )
    ax.set_xlabel("MACs per input (millions)" if x == "macs" else "latency at batch 1 (ms)")
    ax.set_ylabel(metric.heading if metric is not None else "latency at batch 1 (ms)")
    ax.grid(True, alpha=0.35)
    ax.margins(x=0.08, y=0.08)  # room for the width labels at the ends
    ax.legend(loc="best", fontsize=8, framealpha=0.9)


def plot_spectrum(
    spectrum: Spectrum, path: str | os.PathLike, metric: str | None = None, dpi: int = 130
) -> Path:
    """Save a PNG: ``metric`` (default: the primary one) against MACs and against latency.

    Baselines of ``spectrum.baselines`` are drawn on the same axes, one legend entry per label
    (e.g. every individually trained model under one entry). Without latency the plot has one
    panel; without any metric it shows latency against MACs.
    """
    chosen = spectrum.metric(metric) if metric is not None else spectrum.primary
    if chosen is not None and not any(chosen.name in r.metrics for r in spectrum.rows):
        chosen = None  # no width could be evaluated (e.g. no calibration data)
    if chosen is None:
        if not spectrum.has_latency:
            raise ValueError("nothing to plot: the spectrum has neither a metric nor latency")
        panels: Sequence[str] = ("macs",)
    else:
        panels = ("macs", "latency") if spectrum.has_latency else ("macs",)
    fig = Figure(figsize=(5.6 * len(panels) + 0.4, 4.8), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, x in zip(axes, panels, strict=True):
        _panel(ax, spectrum, x, chosen)
    title = spectrum.model + (f" on {spectrum.dataset}" if spectrum.dataset else "")
    title += f": {chosen.label} against cost" if chosen else ": latency against MACs (no metric)"
    env = spectrum.env
    fig.suptitle(title, fontsize=12)
    note = (
        f"{env.get('device_name') or env.get('device')}, {threads(env)}, "
        f"torch {env.get('torch')}; input {'x'.join(map(str, spectrum.input_size))}; "
        f"points labelled by width"
    )
    fig.text(0.5, -0.01, note, ha="center", va="top", fontsize=7.5, color="#555555")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    return path
