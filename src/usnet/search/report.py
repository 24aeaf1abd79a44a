"""The files a search writes (``search.json``, ``search.md``) and reading widths back from them.

``search.json`` holds the front (each member's width config, MACs, parameters, latency, its
validation metrics and its test metrics), the chosen network for the budget, the best uniform
width within it, and what the numbers were measured on. Other commands take widths from it:
``FILE`` (the chosen network, or the whole front where a command takes several), ``FILE#chosen``,
``FILE#N`` (front member N, from 0) or one entry's JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..io import atomic_write, make_parent
from ..spectrum.compute import NOISY_SPREAD
from ..spectrum.providers import Metric
from .front import Candidate
from .space import JsonWidth, describe

FORMAT = "usnet-search"
FORMAT_VERSION = 1


def entry(
    c: Candidate,
    tests: Mapping[str, Mapping[str, float]],
    timed: Mapping[str, tuple[float, float, float]],
) -> dict[str, Any]:
    """One network as search.json holds it."""
    t = timed.get(c.network)
    return {
        "width": c.width,
        "network": c.network,
        "macs": c.macs,
        "params": c.params,
        "latency_ms": None if t is None else t[0],
        "latency_iqr_ms": None if t is None else [t[1], t[2]],
        "predicted_latency_ms": c.latency_ms,
        "metrics": dict(c.metrics),
        "test_metrics": dict(tests.get(c.network, {})),
        "origin": c.origin,
    }


def write(doc: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``doc`` (with its format header) atomically as JSON."""
    full = {"format": FORMAT, "format_version": FORMAT_VERSION, **doc}
    text = json.dumps(full, indent=1)
    return atomic_write(make_parent(path, "search file"), lambda tmp: tmp.write_text(text + "\n"))


def read(path: str | Path) -> dict[str, Any]:
    """A search.json, checked to be one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such search file (run `usnet search CKPT` first)")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UsageError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise UsageError(f"{path}: not a usnet search file (format {doc.get('format')!r})")
    if not isinstance(doc.get("front"), list):
        raise UsageError(f"{path}: its 'front' must be a list of entries")
    return doc


def _width_of(item: Any, where: str) -> JsonWidth:
    if not isinstance(item, Mapping) or "width" not in item:
        raise UsageError(f"{where}: an entry must hold a 'width'")
    w = item["width"]
    if isinstance(w, Mapping):
        return {str(k): float(v) for k, v in w.items()}
    if isinstance(w, (int, float)) and not isinstance(w, bool):
        return float(w)
    raise UsageError(f"{where}: width {w!r} must be a number or a {{group: width}} mapping")


def searched_widths(text: str, default: str = "chosen") -> list[JsonWidth]:
    """Widths from a search: ``FILE`` (``default``: ``chosen`` or ``front``), ``FILE#chosen``,
    ``FILE#front``, ``FILE#N`` (front member N, from 0) or an entry's JSON text ``{"width":
    ...}``."""
    text = text.strip()
    if text.startswith("{"):
        try:
            return [_width_of(json.loads(text), "search entry")]
        except json.JSONDecodeError as e:
            raise UsageError(f"search entry {text!r}: not valid JSON ({e})") from None
    name, _, which = text.partition("#")
    doc = read(name)
    which = which or default
    front = doc["front"]
    if which == "front":
        return [_width_of(e, f"{name} front[{i}]") for i, e in enumerate(front)]
    if which == "chosen":
        if doc.get("chosen") is None:
            raise UsageError(
                f"{name}: no network was chosen (no budget, or none fits); use {name}#N"
            )
        return [_width_of(doc["chosen"], f"{name} chosen")]
    try:
        i = int(which)
    except ValueError:
        raise UsageError(f"{text!r}: after '#' give 'chosen', 'front' or a front index") from None
    if not 0 <= i < len(front):
        raise UsageError(f"{text!r}: the front has {len(front)} members (0 to {len(front) - 1})")
    return [_width_of(front[i], f"{name} front[{i}]")]


def _show(metric: Metric, values: Mapping[str, float] | None) -> str:
    return metric.show(None if not values else values.get(metric.name))


def _count(n: float | None) -> str:
    if n is None:
        return "-"
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f}"


def markdown(doc: Mapping[str, Any], metric: Metric, groups: Sequence[str]) -> str:
    """search.md: what was searched, the chosen network against the best uniform width, the
    front as a table."""
    v, b = doc["validation"], doc["budget"]
    limits = ", ".join(
        f"{k} <= {_count(x) if k != 'max_latency_ms' else x}" for k, x in b.items() if x is not None
    )
    lines = [
        f"# Searched widths of {doc['model']} ({doc['checkpoint']})",
        "",
        f"Method: {doc['method']} (seed {doc['seed']}, group step {doc['step']}); "
        f"{doc['candidates']} networks measured in {doc['seconds']:.0f} s "
        f"({doc['resumed']} measured by an earlier run). Budget: {limits or 'none'}.",
        f"Validation: {v['note']}. Calibration per candidate: {doc['calibration']['num_samples']} "
        f"images, {doc['calibration']['method']}. Test: {doc['test']['note']}.",
        "",
    ]
    if v["split"] != "validation":
        lines += [
            "**The checkpoint holds no validation split: the search measured images the "
            "model was trained on.**",
            "",
        ]
    rows = [("chosen", doc.get("chosen")), ("best uniform", doc.get("best_uniform"))]
    best = doc.get("best")
    if best is not None and best["network"] != (doc.get("chosen") or {}).get("network"):
        rows.insert(1, ("best on validation", best))
        lines += [
            f"The best network on the validation images leads the best uniform width by less "
            f"than --min-gain ({metric.show(doc['min_gain'])} points: two standard errors of its "
            "validation accuracy by default), so the uniform width is chosen.",
            "",
        ]
    head = f"| | width | MACs | params | latency (ms) | {metric.label} val | {metric.label} test |"
    lines += [head, "|---|---|---:|---:|---:|---:|---:|"]
    for label, e in rows:
        if e is not None:
            lines.append(_row(label, e, metric, groups))
    lat = doc.get("latency", {})
    lines += [
        "",
        f"Latency: {lat.get('measured')}, {lat.get('threads')} threads; '!': its "
        f"interquartile range exceeds {100 * NOISY_SPREAD:.0f} % of the median (a busy machine: "
        "not to be trusted).",
        "",
        f"## Front ({len(doc['front'])} networks, cheapest first)",
        "",
        head,
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    lines += [_row(str(i), e, metric, groups) for i, e in enumerate(doc["front"])]
    return "\n".join(lines) + "\n"


def _latency(e: Mapping[str, Any]) -> str:
    """The measured latency, flagged ``!`` when its interquartile range exceeds the spectrum's
    noise limit (a busy machine: not to be trusted)."""
    lat, iqr = e.get("latency_ms"), e.get("latency_iqr_ms")
    if lat is None:
        return "-"
    noisy = iqr is not None and (iqr[1] - iqr[0]) > NOISY_SPREAD * lat
    return f"{lat:.3f}" + (" !" if noisy else "")


def _row(label: str, e: Mapping[str, Any], metric: Metric, groups: Sequence[str]) -> str:
    return (
        f"| {label} | {describe(e['width'], groups)} | {_count(e['macs'])} | {_count(e['params'])} "
        f"| {_latency(e)} | {_show(metric, e.get('metrics'))} "
        f"| {_show(metric, e.get('test_metrics'))} |"
    )
