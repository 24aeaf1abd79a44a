"""What a spectrum is: :class:`Spectrum` and its rows, and their JSON form, validated on reading.

A spectrum file is often read back (``usnet select`` reuses it) and sometimes edited by hand, so
:meth:`Spectrum.from_dict` checks every field's type with pydantic (strictly: a string is not a
number) and names the bad row and field in one line instead of failing later in arithmetic.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import NonNegativeInt, PositiveFloat, TypeAdapter, ValidationError

from ..errors import UsageError
from ..nn import format_width
from .providers import Metric, find_metric

#: How a spectrum's model was trained: a US-Net, one fixed width, or a switchable-BN S-Net.
Kind = Literal["us", "individual", "switches"]
SPECTRUM_FORMAT = "usnet-spectrum"
#: 2: rows record the latency's quartiles and a noisy-timing flag (version 1 files still load).
SPECTRUM_VERSION = 2


def show_width(w: float | Mapping[str, float] | str) -> str:
    """A width as people read it: ``0.5``, or a per-group width as :func:`format_width` shows it;
    a text label (e.g. a reference row's ``bicubic``) as it is."""
    if isinstance(w, str):
        return w
    if isinstance(w, Mapping):
        return format_width(tuple(w.items()))
    return f"{w:g}"


@dataclass
class SpectrumRow:
    """One network of the spectrum: every grid width in ``widths`` selects it.

    Timings are medians of interleaved rounds (:func:`usnet.profile.interleaved_latency_of`);
    ``latency_iqr_ms`` and ``throughput_iqr`` are their interquartile ranges (low, high), and
    ``noisy`` flags a row whose timings spread too widely to trust (the spectrum's
    ``env["noisy_spread"]``).
    """

    width: float | dict[str, float]
    widths: list[float | dict[str, float]]
    network: str
    channels: NonNegativeInt
    channels_full: NonNegativeInt
    macs: NonNegativeInt
    params: NonNegativeInt
    latency_ms: PositiveFloat | None = None
    throughput: PositiveFloat | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    latency_iqr_ms: tuple[float, float] | None = None
    throughput_iqr: tuple[float, float] | None = None
    noisy: bool = False

    @property
    def label(self) -> str:
        return show_width(self.width)

    def noisy_timings(self, limit: object) -> tuple[bool, bool]:
        """Which timing is too noisy to trust: (latency, throughput), judged against ``limit``
        (the spectrum's ``env["noisy_spread"]``); the row's flag for both when that is unknown."""
        if not self.noisy or not isinstance(limit, (int, float)):
            return self.noisy, self.noisy

        def wide(iqr: tuple[float, float] | None, mid: float | None) -> bool:
            return iqr is not None and mid is not None and abs(iqr[1] - iqr[0]) > limit * mid

        return wide(self.latency_iqr_ms, self.latency_ms), wide(
            self.throughput_iqr, self.throughput
        )

    @property
    def shared(self) -> str:
        """The widths that select this network, compactly (``0.35..0.55 (9)``); '' if only one."""
        if len(self.widths) < 2:
            return ""
        uniform = [w for w in self.widths if isinstance(w, (int, float))]
        if len(uniform) == len(self.widths):
            return f"{min(uniform):g}..{max(uniform):g} ({len(uniform)})"
        return " ".join(show_width(w) for w in self.widths)


@dataclass
class Spectrum:
    """A spectrum: rows sorted by MACs, the metrics measured and what the timings depend on."""

    rows: list[SpectrumRow]
    model: str
    task: str
    metrics: list[Metric]
    input_size: tuple[int, ...]
    env: dict[str, Any]
    dataset: str = ""
    label: str = "US-Net"
    kind: Kind = "us"
    references: dict[str, dict[str, float]] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    calibrated_here: list[str] = field(default_factory=list)
    baselines: list[Spectrum] = field(default_factory=list)

    @property
    def primary(self) -> Metric | None:
        return next((m for m in self.metrics if m.higher_is_better is not None), None)

    def metric(self, name: str) -> Metric:
        return find_metric(self.metrics, name)

    @property
    def has_latency(self) -> bool:
        return any(r.latency_ms is not None for r in self.rows)

    @property
    def noisy(self) -> list[SpectrumRow]:
        """The rows whose timings spread too widely to trust."""
        return [r for r in self.rows if r.noisy]

    def widths(self) -> list[float | dict[str, float]]:
        return [w for r in self.rows for w in r.widths]

    def to_dict(self) -> dict[str, Any]:
        doc = dataclasses.asdict(self)
        doc["input_size"] = list(self.input_size)
        doc["baselines"] = [b.to_dict() for b in self.baselines]
        return {"format": SPECTRUM_FORMAT, "format_version": SPECTRUM_VERSION, **doc}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], where: str = "spectrum") -> Spectrum:
        """Read :meth:`to_dict`'s form; ``ValueError`` naming ``where``, the row and the field."""
        version = doc.get("format_version")
        if doc.get("format") != SPECTRUM_FORMAT or not (
            isinstance(version, int) and 1 <= version <= SPECTRUM_VERSION
        ):
            raise UsageError(
                f"{where}: not a usnet spectrum (format {doc.get('format')!r} version "
                f"{version!r}; expected {SPECTRUM_FORMAT!r} version 1 to {SPECTRUM_VERSION})"
            )
        body = _body(doc)
        try:
            # Strict JSON validation: a string where a number belongs is an error, not coerced.
            spec = _adapter().validate_json(json.dumps(body), strict=True)
        except ValidationError as e:
            raise UsageError(f"{where}: {_explain(e, body)}") from None
        _check_fractions(spec, where)
        return spec


def _check_fractions(spec: Spectrum, where: str) -> None:
    """A fraction metric (top-1...) outside [0, 1] is a hand edit gone wrong, not a result:
    ``top1: 5.0`` would print as 500 %."""
    for part in (spec, *spec.baselines):
        for i, row in enumerate(part.rows):
            for m in part.metrics:
                v = row.metrics.get(m.name)
                if m.fraction and v is not None and not math.isnan(v) and not 0 <= v <= 1:
                    raise UsageError(
                        f"{where}: row {i + 1} (width {row.label}), field metrics.{m.name}: "
                        f"a fraction must lie in [0, 1] (got {v!r})"
                    )


def _body(doc: Mapping[str, Any]) -> dict[str, Any]:
    """``doc`` without its format header, baselines included (a copy: ``doc`` is not changed)."""
    body = {k: v for k, v in doc.items() if k not in ("format", "format_version")}
    if isinstance(body.get("baselines"), list):
        body["baselines"] = [_body(b) if isinstance(b, Mapping) else b for b in body["baselines"]]
    return body


@functools.cache
def _adapter() -> TypeAdapter[Spectrum]:
    """The pydantic validator of :class:`Spectrum` (built once, on first use)."""
    return TypeAdapter(Spectrum)


def _explain(error: ValidationError, doc: Mapping[str, Any]) -> str:
    """pydantic's errors as one line: ``row 2 (width 0.5), field macs: ...``; the first few."""
    seen: dict[str, str] = {}
    for e in error.errors():
        where, node = [], doc
        loc = list(e["loc"])
        while loc:
            key = loc.pop(0)
            if key in ("rows", "baselines") and loc and isinstance(loc[0], int):
                i = int(loc.pop(0))
                items = node.get(key) if isinstance(node, Mapping) else None
                node = items[i] if isinstance(items, Sequence) and i < len(items) else {}
                name = "row" if key == "rows" else "baseline"
                w = node.get("width") if key == "rows" and isinstance(node, Mapping) else None
                where.append(f"{name} {i + 1}" + (f" (width {w!r})" if w is not None else ""))
            else:
                # Drop the union-member tags pydantic adds (``float``, ``dict[str,float]``).
                names = [str(key)] + [
                    str(k) for k in loc if isinstance(k, int) or "[" not in str(k)
                ]
                names = [n for n in names if n not in ("float", "int", "str", "bool")]
                where.append("field " + ".".join(names))
                break
        place = ", ".join(where) or "the document"
        if place not in seen:
            got = f" (got {e['input']!r})" if e["type"] != "missing" else ""
            seen[place] = f"{place}: {e['msg']}{got}"
    shown = list(seen.values())
    more = f" (and {len(shown) - 3} more)" if len(shown) > 3 else ""
    return "; ".join(shown[:3]) + more
