"""Choosing a width from a spectrum under a budget: MACs, latency on this device, a metric floor.

Also parses the budgets as users write them (``150M`` MACs, ``5ms``, ``top1=90%``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import UsageError
from .providers import Metric, find_metric
from .result import Spectrum, SpectrumRow
from .tables import format_count

_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}


def parse_count(text: str | float, what: str = "budget") -> float:
    """``150M`` -> 1.5e8, ``1.2G``, ``5e8``, ``300k``: a count with an optional SI suffix."""
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([kKmMgGtT]?)\s*", text)
        if m is None:
            raise UsageError(
                f"{what} {text!r} must be a number with an optional suffix k, M, G or T "
                f"(e.g. 150M, 1.2G, 5e8)"
            )
        value = float(m.group(1)) * _SUFFIX[m.group(2).lower()]
    if not math.isfinite(value):
        raise UsageError(f"{what} {text!r} is too large to be a number (at most about 1.8e308)")
    if not value > 0:
        raise UsageError(f"{what} {text!r} must be positive")
    return value


def parse_latency_ms(text: str | float) -> float:
    """``5``, ``5ms``, ``500us``, ``0.005s``: a latency budget in milliseconds."""
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms|us|s)?\s*", text)
        if m is None:
            raise UsageError(f"latency budget {text!r} must be milliseconds, e.g. 5 or 5ms")
        value = float(m.group(1)) * {None: 1.0, "ms": 1.0, "us": 1e-3, "s": 1e3}[m.group(2)]
    if not math.isfinite(value):
        raise UsageError(f"latency budget {text!r} is too large to be a number")
    if not value > 0:
        raise UsageError(f"latency budget {text!r} must be positive")
    return value


def parse_target(
    text: str, metrics: Sequence[Metric] | None = None, where: str = "this spectrum"
) -> tuple[str, float]:
    """``top1=0.9`` or ``top1=90%`` -> (``top1``, 0.9): a metric floor (a ceiling if lower is
    better). With ``metrics`` (a spectrum's, or a provider's before it measures anything) the
    name and a fraction's range are checked too."""
    name, sep, value = text.partition("=")
    name, value = name.strip(), value.strip()
    if not sep or not name or not value:
        raise UsageError(f"metric target {text!r} must be NAME=VALUE, e.g. top1=0.9")
    percent = value.endswith("%")
    try:
        number = float(value.rstrip("%"))
    except ValueError:
        raise UsageError(f"metric target {text!r}: {value!r} is not a number") from None
    if not math.isfinite(number):
        raise UsageError(f"metric target {text!r}: {value!r} is not a finite number")
    if percent:
        number /= 100
    if metrics is not None:
        metric = find_metric(metrics, name, where)
        if metric.higher_is_better is None:
            raise UsageError(f"metric {name!r} is descriptive and cannot be a target")
        if metric.fraction and not 0 <= number <= 1:
            # a value in (1, 100] was likely meant as a percentage; anything else was not
            hint = f"; did you mean {number / 100:g} (or {number:g}%)?" if 1 < number <= 100 else ""
            raise UsageError(f"{name} is a fraction in [0, 1] (or 0% to 100%), got {value}{hint}")
    return name, number


@dataclass
class Selection:
    """The chosen network, how many fitted, and why it was chosen."""

    row: SpectrumRow
    fitting: int
    reason: str


def select(
    spectrum: Spectrum,
    max_macs: float | None = None,
    max_latency_ms: float | None = None,
    target: tuple[str, float] | None = None,
) -> Selection:
    """The best width under the budget.

    With a metric ``target`` (name, value): the cheapest network (fewest MACs, then lowest
    latency) reaching it. Otherwise the network with the best primary metric within the MACs /
    latency budget (ties: the cheaper); a spectrum without metrics gives the widest that fits.
    Budgets combine. No fit raises ``ValueError`` naming the cheapest (or best) available.
    """
    if max_macs is None and max_latency_ms is None and target is None:
        raise UsageError("give a budget: max_macs, max_latency_ms or a metric target")
    if max_latency_ms is not None and not spectrum.has_latency:
        raise UsageError("this spectrum has no latency: measure it to select by latency")
    metric = spectrum.metric(target[0]) if target is not None else spectrum.primary
    rows = [r for r in spectrum.rows if r.latency_ms is not None or max_latency_ms is None]
    if not rows:
        raise UsageError(
            "the spectrum has no widths to choose from" + (" with a latency" if spectrum.rows else "")
        )

    def cost(r: SpectrumRow) -> tuple:
        return (r.macs, r.latency_ms if r.latency_ms is not None else 0.0)

    def summary(r: SpectrumRow) -> str:
        parts = [f"width {r.label}", f"{format_count(r.macs)} MACs"]
        if r.latency_ms is not None:
            parts.append(f"{r.latency_ms:.2f} ms" + (" (noisy timing)" if r.noisy else ""))
        if metric is not None and metric.name in r.metrics:
            parts.append(
                f"{metric.name} {metric.show(r.metrics[metric.name])}"
                + ("%" if metric.fraction else "")
            )
        return ", ".join(parts)

    limits = []
    if max_macs is not None:
        limits.append(f"MACs <= {format_count(max_macs)}")
    if max_latency_ms is not None:
        limits.append(f"latency <= {max_latency_ms:g} ms")
    budget = " and ".join(limits)
    fits = [
        r
        for r in rows
        if (max_macs is None or r.macs <= max_macs)
        and (max_latency_ms is None or (r.latency_ms or 0.0) <= max_latency_ms)
    ]
    if not fits:
        by_latency = max_latency_ms is not None and max_macs is None
        cheapest = min(rows, key=lambda r: (r.latency_ms or 0.0, r.macs) if by_latency else cost(r))
        raise UsageError(f"no width fits {budget}: the cheapest available is {summary(cheapest)}")

    def best(candidates: list[SpectrumRow]) -> SpectrumRow:
        """Best by ``metric``; equal values go to the cheaper network."""
        assert metric is not None
        choice = candidates[0]
        for r in candidates[1:]:
            v, b = r.metrics[metric.name], choice.metrics[metric.name]
            if metric.better(v, b) or (v == b and cost(r) < cost(choice)):
                choice = r
        return choice

    within = f" within {budget}" if budget else ""
    if target is not None:
        assert metric is not None
        name, value = target
        scored = [r for r in fits if name in r.metrics]
        if not scored:
            raise UsageError(f"no width{within} has a measured {name}")
        sign = ">=" if metric.higher_is_better is not False else "<="
        goal = f"{name} {sign} {metric.show(value)}" + ("%" if metric.fraction else "")
        good = [r for r in scored if metric.reaches(r.metrics[name], value)]
        if not good:
            raise UsageError(
                f"no width reaches {goal}{within}: the best is {summary(best(scored))}"
            )
        choice = min(good, key=cost)
        why = f"the cheapest of {_networks(len(good))} reaching {goal}{within}"
        return Selection(choice, len(good), f"{summary(choice)}: {why}")
    scored = [r for r in fits if metric is not None and metric.name in r.metrics]
    if not scored:
        choice = max(fits, key=cost)
        why = f"the widest of {_networks(len(fits))}{within} (no quality metric measured)"
        return Selection(choice, len(fits), f"{summary(choice)}: {why}")
    choice = best(scored)
    assert metric is not None
    why = f"the best {metric.label} of {_networks(len(scored))}{within}"
    return Selection(choice, len(fits), f"{summary(choice)}: {why}")


def _networks(n: int) -> str:
    return f"{n} network" + ("" if n == 1 else "s")
