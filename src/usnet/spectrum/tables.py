"""Tables of spectra and per-width results: ONE formatter for the terminal, Markdown and CSV.

A table is a list of :class:`Column` and a list of rows; :func:`render` lays it out in any of
the three styles, so the spectrum's terminal table, its ``spectrum.md`` and ``spectrum.csv``
and the end-of-training summaries cannot drift apart. :func:`format_table` builds the columns
for a :class:`~usnet.spectrum.result.Spectrum` or for plain per-width rows and renders them.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from ..errors import UsageError
from .providers import Metric
from .result import Spectrum, SpectrumRow, show_width

R = TypeVar("R")
Style = Literal["text", "markdown", "csv"]
STYLES = ("text", "markdown", "csv")
#: Marks the timing cells of a noisy row; :func:`noisy_note` explains it under the table.
NOISY_MARK = "!"


@dataclass(frozen=True)
class Column(Generic[R]):
    """One column: ``heading`` and ``cell`` for people (``None``: CSV only), ``key`` and
    ``value`` for the CSV (``key`` ``None``: not in the CSV; ``value`` default: ``cell``)."""

    heading: str | None
    cell: Callable[[R], str]
    key: str | None = None
    value: Callable[[R], object] | None = None
    left: bool = False


def render(columns: Sequence[Column[R]], rows: Sequence[R], style: Style = "text") -> str:
    """The table in ``style``: aligned text, a Markdown table, or CSV (raw values, key headers)."""
    if style == "csv":
        keep = [c for c in columns if c.key is not None]
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([c.key for c in keep])
        for r in rows:
            writer.writerow(
                ["" if v is None else v for v in ((c.value or c.cell)(r) for c in keep)]
            )
        return out.getvalue()
    if style not in STYLES:
        raise UsageError(f"table style {style!r} is unknown; allowed: {list(STYLES)}")
    shown = [c for c in columns if c.heading is not None]
    cells = [[str(c.heading) for c in shown]] + [[c.cell(r) for c in shown] for r in rows]
    if style == "markdown":
        rule = "|" + "|".join("---" if c.left else "---:" for c in shown) + "|"
        lines = ["| " + " | ".join(row) + " |" for row in cells]
        return "\n".join([lines[0], rule, *lines[1:]])
    sizes = [max(len(row[i]) for row in cells) for i in range(len(shown))]
    lines = [
        "  ".join(
            x.ljust(s) if c.left else x.rjust(s) for x, s, c in zip(row, sizes, shown, strict=True)
        ).rstrip()
        for row in cells
    ]
    return "\n".join([lines[0], "  ".join("-" * s for s in sizes), *lines[1:]])


def format_table(
    table: Spectrum | Sequence[Mapping[str, Any]],
    style: Style = "text",
    metrics: Sequence[Metric] = (),
) -> str:
    """A spectrum, or per-width rows, as a table in ``style`` (text, markdown or csv).

    Per-width rows are mappings with ``width`` (a float, ``{group: width}``, or a label such
    as ``"bicubic"`` for a reference row) and any of ``macs``, ``params``, ``latency_ms`` and the
    ``metrics``' names; e.g. a training summary::

        format_table([{"width": 1.0, "macs": 4_610_000, "top1": 0.91, "top5": 0.99}, ...],
                     "markdown", metrics)

    A spectrum with noisy timings gets a line under its text or Markdown table saying so.
    """
    if isinstance(table, Spectrum):
        text = render(spectrum_columns(table), table.rows, style)
        note = noisy_note(table)
        if note and style != "csv":  # Markdown needs the blank line to end the table
            text += ("\n\n" if style == "markdown" else "\n") + note
        return text
    return render(row_columns(table, metrics), table, style)


def format_count(n: float | None) -> str:
    """``216``, ``3.64k``, ``4.61M``, ``1.2G``: a count people can read at any size."""
    if n is None:
        return "-"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{suffix}"
    return f"{n:.3g}"


def _ms(x: float | None) -> str:
    """Milliseconds to three significant digits, trailing zeros kept (``2.20``, ``0.0817``)."""
    if x is None:
        return "-"
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:#.3g}"


def _sig(x: float | None, digits: int = 5) -> float | None:
    """``x`` to ``digits`` significant digits for the CSV (timings are not more precise)."""
    return None if x is None else float(f"{x:.{digits}g}")


def _mark(noisy: bool) -> Callable[[str], str]:
    """Marks a timing cell that is noisy; pads the others so the digits stay aligned."""
    return lambda text: f"{text} {NOISY_MARK}" if noisy else f"{text}  "


def spectrum_columns(spectrum: Spectrum) -> list[Column[SpectrumRow]]:
    """The spectrum's columns; the CSV keeps every timing column even when none was measured."""
    image = len(spectrum.input_size) == 3 and spectrum.input_size[-1] > 1
    per_s = "img/s" if image else "inputs/s"
    timed = spectrum.has_latency
    env = spectrum.env
    bs, limit = env.get("throughput_batch_size", ""), env.get("noisy_spread")

    def latency(r: SpectrumRow) -> str:
        noisy = r.noisy_timings(limit)[0]
        return "-" if r.latency_ms is None else _mark(noisy)(_ms(r.latency_ms))

    def throughput(r: SpectrumRow) -> str:
        noisy = r.noisy_timings(limit)[1]
        return "-" if r.throughput is None else _mark(noisy)(f"{r.throughput:.0f}")

    def iqr(r: SpectrumRow) -> str:
        q = r.latency_iqr_ms
        return "-" if q is None else f"{_ms(q[0])}-{_ms(q[1])}"

    def end(pair: Sequence[float] | None, i: int) -> float | None:
        return None if pair is None else _sig(pair[i])

    def cols(*c: Column[SpectrumRow]) -> list[Column[SpectrumRow]]:
        return list(c)

    out = cols(
        Column("width", lambda r: r.label, "width", left=True),
        Column(
            "widths sharing it",
            lambda r: r.shared or "-",
            "widths",
            lambda r: " ".join(show_width(w) for w in r.widths),
            left=True,
        ),
        Column(None, lambda r: r.network, "network"),
        Column(
            "channels",
            lambda r: f"{r.channels} ({100 * r.channels / max(r.channels_full, 1):.0f}%)",
            "channels",
            lambda r: r.channels,
        ),
        Column(None, lambda r: str(r.channels_full), "channels_full", lambda r: r.channels_full),
        Column("MACs", lambda r: format_count(r.macs), "macs", lambda r: r.macs),
        Column("params", lambda r: format_count(r.params), "params", lambda r: r.params),
        Column(
            "latency (ms)" if timed else None, latency, "latency_ms", lambda r: _sig(r.latency_ms)
        ),
        Column(
            "latency IQR (ms)" if timed else None,
            iqr,
            "latency_q1_ms",
            lambda r: end(r.latency_iqr_ms, 0),
        ),
        Column(None, str, "latency_q3_ms", lambda r: end(r.latency_iqr_ms, 1)),
        Column(
            f"{per_s} @{bs}" if timed else None,
            throughput,
            "throughput",
            lambda r: _sig(r.throughput),
        ),
        Column(None, str, "throughput_q1", lambda r: end(r.throughput_iqr, 0)),
        Column(None, str, "throughput_q3", lambda r: end(r.throughput_iqr, 1)),
        Column(None, str, "noisy", lambda r: int(r.noisy)),
    )
    return out + _metric_columns(spectrum.metrics, lambda r, name: r.metrics.get(name))


def _metric_columns(metrics: Sequence[Metric], get: Callable[[Any, str], Any]) -> list[Column[Any]]:
    def column(m: Metric) -> Column[Any]:
        return Column(m.heading, lambda r: m.show(get(r, m.name)), m.name, lambda r: get(r, m.name))

    return [column(m) for m in metrics]


def row_columns(
    rows: Sequence[Mapping[str, Any]], metrics: Sequence[Metric]
) -> list[Column[Mapping[str, Any]]]:
    """Columns for per-width rows: the width, the costs present in any row, the metrics."""
    cols: list[Column[Mapping[str, Any]]] = [
        Column("width", lambda r: show_width(r["width"]), "width", left=True)
    ]

    def count(key: str, heading: str) -> Column[Mapping[str, Any]]:
        return Column(heading, lambda r: format_count(r.get(key)), key, lambda r: r.get(key))

    for key, heading in (("macs", "MACs"), ("params", "params")):
        if any(r.get(key) is not None for r in rows):
            cols.append(count(key, heading))
    if any(r.get("latency_ms") is not None for r in rows):
        cols.append(
            Column(
                "latency (ms)",
                lambda r: _ms(r.get("latency_ms")),
                "latency_ms",
                lambda r: r.get("latency_ms"),
            )
        )
    return cols + _metric_columns(metrics, lambda r, name: r.get(name))


def threads(env: Mapping[str, Any]) -> str:
    """``1 thread`` / ``2 threads`` from an environment record."""
    n = env.get("threads")
    return f"{n} thread" + ("" if n == 1 else "s")


def noisy_note(spectrum: Spectrum) -> str:
    """A line explaining the noisy-timing mark, or '' when no row has it."""
    n = len(spectrum.noisy)
    if not n:
        return ""
    limit = spectrum.env.get("noisy_spread")
    share = f"{100 * limit:.0f}% of " if isinstance(limit, (int, float)) else ""
    return (
        f"{NOISY_MARK} noisy timing in {n} of {len(spectrum.rows)} rows: the middle half of the "
        f"runs spans more than {share}the median (a busy machine?); re-measure before trusting it"
    )


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
    """The spectrum as a Markdown document: what was measured, how, and the tables."""
    env = spectrum.env
    lines = [
        f"# Spectrum of {spectrum.model}" + (f" on {spectrum.dataset}" if spectrum.dataset else ""),
        "",
        f"- device: {env.get('device')} ({env.get('device_name')}), {threads(env)}, "
        f"torch {env.get('torch')}, python {env.get('python')}",
        f"- measured: {env.get('date')}",
        f"- input: {'x'.join(map(str, spectrum.input_size))}; MACs per input",
    ]
    if spectrum.has_latency:
        lines.append(
            f"- latency: median (and interquartile range) of {env.get('repeats')} rounds at "
            f"batch 1 after warm-up ({env.get('warmup')}), every round timing each width once in "
            f"a shuffled order; throughput at batch {env.get('throughput_batch_size')}"
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
    lines += ["", format_table(spectrum, "markdown")]
    for b in spectrum.baselines:
        checkpoint = b.source.get("checkpoint")
        title = f"## Baseline: {b.label}" + (f" (`{checkpoint}`)" if checkpoint else "")
        lines += ["", title, "", format_table(b, "markdown")]
    return "\n".join(lines) + "\n"
