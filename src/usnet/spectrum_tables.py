"""A spectrum as text: the terminal table, the Markdown document and the CSV file."""

from __future__ import annotations

import csv
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .nn import format_width

if TYPE_CHECKING:  # spectrum.py imports this module to write its files
    from .spectrum import Spectrum, SpectrumRow


def show_width(w: float | Mapping[str, float]) -> str:
    """A width as people read it: ``0.5``, or a per-group width as :func:`format_width` shows it."""
    if isinstance(w, Mapping):
        return format_width(tuple(w.items()))
    return f"{w:g}"


def threads(env: Mapping[str, Any]) -> str:
    """``1 thread`` / ``2 threads`` from an environment record."""
    n = env.get("threads")
    return f"{n} thread" + ("" if n == 1 else "s")


def _columns(spectrum: Spectrum) -> list[tuple[str, Callable[[SpectrumRow], str]]]:
    image = len(spectrum.input_size) == 3 and spectrum.input_size[-1] > 1
    per_s = "img/s" if image else "inputs/s"
    cols: list[tuple[str, Callable[[SpectrumRow], str]]] = [
        ("width", lambda r: r.label),
        ("widths sharing it", lambda r: r.shared or "-"),
        ("channels", lambda r: f"{r.channels} ({100 * r.channels / max(r.channels_full, 1):.0f}%)"),
        ("MACs (M)", lambda r: f"{r.macs / 1e6:.4g}"),
        ("params (M)", lambda r: f"{r.params / 1e6:.4g}"),
    ]
    if spectrum.has_latency:
        bs = spectrum.env.get("throughput_batch_size", "")
        cols += [
            ("latency (ms)", lambda r: "-" if r.latency_ms is None else f"{r.latency_ms:.2f}"),
            (f"{per_s} @{bs}", lambda r: "-" if r.throughput is None else f"{r.throughput:.0f}"),
        ]
    for m in spectrum.metrics:
        cols.append((m.heading, lambda r, m=m: m.show(r.metrics.get(m.name))))
    return cols


def format_table(spectrum: Spectrum) -> str:
    """The spectrum as an aligned text table (for the terminal)."""
    cols = _columns(spectrum)
    cells = [[name for name, _ in cols]] + [[f(r) for _, f in cols] for r in spectrum.rows]
    sizes = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    lines = []
    for j, row in enumerate(cells):
        lines.append(
            "  ".join(
                c.ljust(s) if i < 2 else c.rjust(s)
                for i, (c, s) in enumerate(zip(row, sizes, strict=True))
            )
        )
        if j == 0:
            lines.append("  ".join("-" * s for s in sizes))
    return "\n".join(lines)


def describe(spectrum: Spectrum) -> str:
    """One line: model, data, device and what the timings used."""
    env = spectrum.env
    parts = [spectrum.model]
    if spectrum.dataset:
        parts.append(f"on {spectrum.dataset}")
    parts.append(
        f"| {len(spectrum.widths())} widths, {len(spectrum.rows)} distinct networks | input "
        f"{'x'.join(map(str, spectrum.input_size))}"
    )
    parts.append(
        f"| {env.get('device')} ({env.get('device_name')}), {threads(env)}, "
        f"torch {env.get('torch')}"
    )
    return " ".join(parts)


def to_markdown(spectrum: Spectrum) -> str:
    """The spectrum as a Markdown document: what was measured, how, and the table."""
    cols = _columns(spectrum)
    env = spectrum.env
    lines = [
        f"# Spectrum of {spectrum.model}" + (f" on {spectrum.dataset}" if spectrum.dataset else ""),
        "",
    ]
    lines.append(
        f"- device: {env.get('device')} ({env.get('device_name')}), {threads(env)}, "
        f"torch {env.get('torch')}, python {env.get('python')}"
    )
    lines.append(f"- measured: {env.get('date')}")
    lines.append(f"- input: {'x'.join(map(str, spectrum.input_size))}; MACs per input")
    if spectrum.has_latency:
        lines.append(
            f"- latency: median of {env.get('repeats')} runs after {env.get('warmup')} warm-up "
            f"runs at batch 1; throughput at batch {env.get('throughput_batch_size')}"
        )
    if spectrum.source.get("checkpoint"):
        lines.append(f"- checkpoint: `{spectrum.source['checkpoint']}`")
    if spectrum.calibrated_here:
        lines.append(f"- calibrated for this spectrum: {len(spectrum.calibrated_here)} widths")
    for name, values in spectrum.references.items():
        shown = ", ".join(
            f"{spectrum.metric(k).heading} {spectrum.metric(k).show(v)}"
            for k, v in values.items()
            if any(m.name == k for m in spectrum.metrics)
        )
        lines.append(f"- reference {name}: {shown}")
    lines += [
        "",
        "| " + " | ".join(n for n, _ in cols) + " |",
        "|" + "|".join("---" if i < 2 else "---:" for i in range(len(cols))) + "|",
    ]
    lines += ["| " + " | ".join(f(r) for _, f in cols) + " |" for r in spectrum.rows]
    for b in spectrum.baselines:
        lines += [
            "",
            f"## Baseline: {b.label}"
            + (f" (`{b.source.get('checkpoint')}`)" if b.source.get("checkpoint") else ""),
            "",
        ]
        bcols = _columns(b)
        lines += [
            "| " + " | ".join(n for n, _ in bcols) + " |",
            "|" + "|".join("---" if i < 2 else "---:" for i in range(len(bcols))) + "|",
        ]
        lines += ["| " + " | ".join(f(r) for _, f in bcols) + " |" for r in b.rows]
    return "\n".join(lines) + "\n"


def write_csv(spectrum: Spectrum, path: Path) -> None:
    names = [m.name for m in spectrum.metrics]
    head = [
        "width",
        "widths",
        "network",
        "channels",
        "channels_full",
        "macs",
        "params",
        "latency_ms",
        "throughput",
        *names,
    ]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(head)
        for r in spectrum.rows:
            writer.writerow(
                [
                    r.label,
                    " ".join(show_width(w) for w in r.widths),
                    r.network,
                    r.channels,
                    r.channels_full,
                    r.macs,
                    r.params,
                    "" if r.latency_ms is None else f"{r.latency_ms:.4f}",
                    "" if r.throughput is None else f"{r.throughput:.2f}",
                    *("" if r.metrics.get(n) is None else r.metrics[n] for n in names),
                ]
            )
