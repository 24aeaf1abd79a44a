"""The study's plots, drawn from a plan's CSV rows: mean and spread (min-max) over seeds.

- ``width.png``: top-1 vs width, one panel per schedule (epochs), one series per method family;
- ``epochs.png``: top-1 vs epochs, one panel per width the families share;
- ``compute.png``: top-1 vs training compute (MACs processed by the training steps), one panel
  per width: a US-Net's one run serves every width, so its point at each width costs its whole
  training compute.

matplotlib's object API on the Agg canvas: no pyplot state, safe in any process.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from matplotlib import rcParams, ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .summary import summarize

STYLE = {"us": ("o", "-"), "snet": ("^", "--"), "individual": ("s", ":")}
#: A panel's y-axis spans at most this many points below its best mean: a collapsed run (e.g.
#: sandwich n=2 at 65 %) would otherwise squeeze every other curve into a flat band. Points
#: below are drawn on the bottom edge with their value written beside them.
FOCUS_SPAN = 8.0


def _series(rows: list[dict[str, Any]]) -> dict[str, tuple[str, str]]:
    """Series label -> (kind: us / snet / individual, colour), in first-seen order; one colour
    per series in every panel."""
    kinds = {r["series"]: r["kind"] for r in rows}
    colors = rcParams["axes.prop_cycle"].by_key()["color"]
    return {s: (k, colors[i % len(colors)]) for i, (s, k) in enumerate(kinds.items())}


def _draw(
    ax: Any, xs: list[float], stats: list[dict[str, float]], label: str, style: tuple[str, str]
) -> list[tuple[float, float, str]]:
    """One series with min-max error bars; returns its points (x, mean, colour) for
    :func:`_focus`."""
    kind, color = style
    marker, line = STYLE.get(kind, ("x", "-"))
    ys = [s["mean"] for s in stats]
    err = [
        [y - s["lo"] for y, s in zip(ys, stats, strict=True)],
        [s["hi"] - y for y, s in zip(ys, stats, strict=True)],
    ]
    ax.errorbar(
        xs, ys, yerr=err, marker=marker, linestyle=line, capsize=3, label=label, color=color
    )
    return [(x, y, color) for x, y in zip(xs, ys, strict=True)]


def _focus(ax: Any, points: list[tuple[float, float, str]], span: float = FOCUS_SPAN) -> None:
    """Limit the y-axis to ``span`` points below the best mean; mark the points left out."""
    if not points:
        return
    floor = max(y for _, y, _ in points) - span
    low = [(x, y, c) for x, y, c in points if y < floor]
    if not low:
        return
    ax.set_ylim(bottom=floor)
    for x, y, c in low:
        ax.plot([x], [floor], marker="v", color=c, clip_on=False, linestyle="none")
        ax.annotate(
            f"{y:.1f}", (x, floor), xytext=(4, 4), textcoords="offset points", color=c,
            fontsize="small",
        )  # fmt: skip


def _figure(panels: int) -> tuple[Figure, list[Any]]:
    fig = Figure(figsize=(4.2 * panels, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    return fig, list(axes)


def _save(fig: Figure, path: Path) -> Path:
    """One legend for all panels (a series may be missing from some), then the PNG."""
    labels: dict[str, Any] = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            labels.setdefault(label, handle)
    fig.legend(list(labels.values()), list(labels), loc="outside right upper", fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def plot_width(rows: list[dict[str, Any]], path: Path) -> Path:
    stats = summarize(rows, ("series", "epochs", "width"))
    epochs = sorted({r["epochs"] for r in rows})
    fig, axes = _figure(len(epochs))
    for ax, e in zip(axes, epochs, strict=True):
        drawn = []
        for label, style in _series(rows).items():
            pts = sorted((w, s) for (lab, ep, w), s in stats.items() if lab == label and ep == e)
            if pts:
                drawn += _draw(ax, [w for w, _ in pts], [s for _, s in pts], label, style)
        _focus(ax, drawn)
        ax.set(title=f"{e} epochs", xlabel="width", ylabel="top-1 (%)")
        ax.grid(alpha=0.3)
    return _save(fig, path)


def _shared_widths(rows: list[dict[str, Any]]) -> list[float]:
    """Widths measured for more than one family (the comparison points)."""
    fams: dict[float, set[str]] = defaultdict(set)
    for r in rows:
        fams[r["width"]].add(r["family"])
    shared = sorted(w for w, f in fams.items() if len(f) > 1)
    return shared or sorted(fams)[:4]


def plot_epochs(rows: list[dict[str, Any]], path: Path) -> Path:
    stats = summarize(rows, ("series", "width", "epochs"))
    widths = _shared_widths(rows)
    fig, axes = _figure(len(widths))
    for ax, w in zip(axes, widths, strict=True):
        drawn = []
        for label, style in _series(rows).items():
            pts = sorted((e, s) for (lab, wd, e), s in stats.items() if lab == label and wd == w)
            if pts:
                drawn += _draw(ax, [e for e, _ in pts], [s for _, s in pts], label, style)
        _focus(ax, drawn)
        ax.set(title=f"width {w:g}", xlabel="epochs", ylabel="top-1 (%)")
        ax.set_xscale("log", base=2)
        ticks = sorted({r["epochs"] for r in rows})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_compute(rows: list[dict[str, Any]], path: Path) -> Path:
    stats = summarize(rows, ("series", "width", "epochs"))
    widths = _shared_widths(rows)
    fig, axes = _figure(len(widths))
    for ax, w in zip(axes, widths, strict=True):
        drawn = []
        for label, style in _series(rows).items():
            pts = sorted(
                (s["macs"], s) for (lab, wd, _), s in stats.items() if lab == label and wd == w
            )
            if pts:
                drawn += _draw(ax, [m / 1e12 for m, _ in pts], [s for _, s in pts], label, style)
        _focus(ax, drawn)
        ax.set(title=f"width {w:g}", xlabel="training compute (10¹² MACs)", ylabel="top-1 (%)")
        # log scale with plain labels at 1-2-5 steps: the default 10^k minor labels overlap
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_all(rows: list[dict[str, Any]], folder: Path) -> list[Path]:
    """Every plot the rows support, into ``folder``."""
    paths = [plot_width(rows, folder / "width.png")]
    if len({r["epochs"] for r in rows}) > 1:
        paths.append(plot_epochs(rows, folder / "epochs.png"))
    paths.append(plot_compute(rows, folder / "compute.png"))
    return paths
