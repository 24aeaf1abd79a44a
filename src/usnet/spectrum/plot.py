"""Plots of spectra (matplotlib): quality against MACs and against latency, with baselines.

Latencies carry their interquartile range as error bars and rows flagged noisy are circled
hollow in red, so timings from a busy machine are visibly not to be trusted; a metric with a
``spread`` (e.g. the return's standard deviation over episodes) is drawn as a band.

Uses matplotlib's object API on an Agg canvas, never ``pyplot``: no global backend or figure
state is touched, so plotting works headless and inside other programs.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..errors import UsageError
from ..io import write_bytes
from .providers import Metric
from .result import Spectrum, SpectrumRow
from .tables import threads

#: Marker and line style per baseline kind (the paper draws fixed-width models as points).
_STYLE: dict[str, dict[str, Any]] = {
    "individual": dict(marker="s", linestyle="none", markersize=8),
    "switches": dict(marker="^", linestyle="none", markersize=9),
    "us": dict(marker=".", linestyle="--", markersize=6, linewidth=1.2),
}
_COLORS = ("#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
_MAIN = "#1f77b4"
_NOISY = "#d62728"
#: MACs axis units: the largest that keeps the biggest network's count at 1 or more.
_SCALES = ((1e9, "billions"), (1e6, "millions"), (1e3, "thousands"), (1.0, ""))


def _value(metric: Metric, row: SpectrumRow, name: str | None = None) -> float | None:
    v = row.metrics.get(name or metric.name)
    if v is None:
        return None
    return 100 * v if metric.fraction else v


def _points(
    spectrum: Spectrum, x: str, metric: Metric | None, scale: float
) -> tuple[list[float], list[float], list[SpectrumRow]]:
    xs, ys, rows = [], [], []
    for r in sorted(spectrum.rows, key=lambda r: r.macs):
        xv = r.macs / scale if x == "macs" else r.latency_ms
        yv = _value(metric, r) if metric is not None else r.latency_ms
        if xv is None or yv is None:
            continue
        xs.append(xv)
        ys.append(yv)
        rows.append(r)
    return xs, ys, rows


def _label_some(ax: Axes, xs: list[float], ys: list[float], rows: list[SpectrumRow]) -> None:
    """Write the width next to a few points: the ends and about four between, none crowded
    (crowding judged on the finished axes, baselines and error bars included)."""
    n = len(rows)
    if n == 0:
        return
    step = max(1, round((n - 1) / 5))
    order = [0, n - 1] + [i for i in range(step, n - 1, step)]  # ends first: they always show
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    placed: list[tuple[float, float]] = []
    for i in dict.fromkeys(order):
        px, py = (xs[i] - x0) / ((x1 - x0) or 1.0), (ys[i] - y0) / ((y1 - y0) or 1.0)
        if any(abs(px - qx) < 0.08 and abs(py - qy) < 0.05 for qx, qy in placed):
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


def _iqr_bars(rows: list[SpectrumRow], centres: list[float]) -> list[list[float]] | None:
    """Error bars (below, above) from the rows' latency IQRs; None when a row has none."""
    iqrs = [r.latency_iqr_ms for r in rows]
    if not rows or any(q is None for q in iqrs):
        return None
    pairs = [
        (max(0.0, c - q[0]), max(0.0, q[1] - c)) for q, c in zip(iqrs, centres, strict=True) if q
    ]
    return [[lo for lo, _ in pairs], [hi for _, hi in pairs]]


def _panel(ax: Axes, spectrum: Spectrum, x: str, metric: Metric | None, scale: float) -> None:
    xs, ys, rows = _points(spectrum, x, metric, scale)
    timed = x == "latency" or metric is None  # latency on one of the axes
    if timed:
        # Measured latency is not monotone in width (kernels change with channel counts), so
        # the points stand alone, each with its timing's interquartile range as an error bar.
        bars = _iqr_bars(rows, xs if x == "latency" else ys)
        ax.errorbar(
            xs,
            ys,
            xerr=bars if x == "latency" else None,
            yerr=bars if x != "latency" else None,
            fmt="o",
            markersize=4.5,
            color=_MAIN,
            ecolor="#6baed6",
            elinewidth=1.2,
            capsize=2.5,
            label=spectrum.label,
            zorder=3,
        )
    else:  # the curve joins the widths in order of MACs
        ax.plot(xs, ys, "o-", markersize=3.5, linewidth=1.6, color=_MAIN, label=spectrum.label)
    if metric is not None and metric.spread and x == "macs":
        spread = [_value(metric, r, metric.spread) for r in rows]
        if xs and all(s is not None for s in spread):
            ax.fill_between(
                xs,
                [y - (s or 0.0) for y, s in zip(ys, spread, strict=True)],
                [y + (s or 0.0) for y, s in zip(ys, spread, strict=True)],
                color=_MAIN,
                alpha=0.15,
                linewidth=0,
                label=f"± {spectrum.metric(metric.spread).label}",
            )
    limit = spectrum.env.get("noisy_spread")
    noisy = [
        (xv, yv)
        for xv, yv, r in zip(xs, ys, rows, strict=True)
        if r.noisy_timings(limit)[0]  # the batch-1 latency drawn here
    ]
    if noisy and timed:
        share = f" > {100 * limit:.0f}% of median" if isinstance(limit, (int, float)) else ""
        ax.plot(
            [p[0] for p in noisy],
            [p[1] for p in noisy],
            linestyle="none",
            marker="o",
            markersize=10,
            markerfacecolor="white",
            markeredgecolor=_NOISY,
            markeredgewidth=1.6,
            label=f"noisy timing (IQR{share})",
            zorder=5,
        )
    by_label: dict[str, tuple[str, list[float], list[float]]] = {}
    for b in spectrum.baselines:
        bx, by, _ = _points(b, x, metric, scale)
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
            **{**_STYLE.get(kind, _STYLE["us"]), **({"linestyle": "none"} if timed else {})},
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
    if x == "macs":
        unit = dict(_SCALES)[scale]
        ax.set_xlabel(f"MACs per input ({unit})" if unit else "MACs per input")
    else:
        ax.set_xlabel("latency at batch 1 (ms)")
    ax.set_ylabel(metric.heading if metric is not None else "latency at batch 1 (ms)")
    ax.grid(True, alpha=0.35)
    ax.margins(x=0.08, y=0.08)  # room for the width labels at the ends
    _label_some(ax, xs, ys, rows)
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
            raise UsageError("nothing to plot: the spectrum has neither a metric nor latency")
        panels: Sequence[str] = ("macs",)
    else:
        panels = ("macs", "latency") if spectrum.has_latency else ("macs",)
    most = max((r.macs for s in (spectrum, *spectrum.baselines) for r in s.rows), default=1)
    scale = next(s for s, _ in _SCALES if most >= s or s == 1.0)
    fig = Figure(figsize=(5.6 * len(panels) + 0.4, 4.8), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, x in zip(axes, panels, strict=True):
        _panel(ax, spectrum, x, chosen, scale)
    title = spectrum.model + (f" on {spectrum.dataset}" if spectrum.dataset else "")
    title += f": {chosen.label} against cost" if chosen else ": latency against MACs (no metric)"
    env = spectrum.env
    fig.suptitle(title, fontsize=12)
    note = (
        f"{env.get('device_name') or env.get('device')}, {threads(env)}, "
        f"torch {env.get('torch')}; input {'x'.join(map(str, spectrum.input_size))}; "
        "points labelled by width"
    )
    if spectrum.has_latency:
        note += f"; latency: median and IQR (bars) of {env.get('repeats')} interleaved rounds"
    fig.text(0.5, -0.01, note, ha="center", va="top", fontsize=7.5, color="#555555")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    png = io.BytesIO()  # rendered first: a full disk must not leave a 0-byte or partial PNG
    fig.savefig(png, format="png", bbox_inches="tight")
    write_bytes(path, png.getvalue())
    return path
