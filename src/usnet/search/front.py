"""Candidates, budgets and the front: what a search measures and what it keeps.

A :class:`Candidate` is one measured network: its width config, costs (MACs, parameters,
predicted latency) and metrics on the validation images. The *front* is the candidates that no
other candidate beats on both cost and metric (design.md): sorted by cost, each member is
strictly better than every cheaper one, so a budget's best network is the front's last member
within it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ..errors import UsageError
from ..spectrum.providers import Metric
from .space import JsonWidth

#: Which cost a search trades against the metric.
CostName = Literal["macs", "params", "latency_ms"]
COSTS: tuple[CostName, ...] = ("macs", "params", "latency_ms")


@dataclass
class Candidate:
    """One measured network. ``origin`` says how the search found it (``uniform``, ``greedy``,
    ``evolution``); ``latency_ms`` is the latency model's prediction (``None`` without one)."""

    width: JsonWidth
    network: str
    macs: int
    params: int
    latency_ms: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    origin: str = ""

    def cost(self, name: CostName) -> float:
        value = getattr(self, name)
        if value is None:
            raise UsageError(f"candidate {self.network} has no {name}: give a latency model")
        return float(value)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Candidate:
        width = doc["width"]
        return cls(
            width=dict(width) if isinstance(width, Mapping) else float(width),
            network=str(doc["network"]),
            macs=int(doc["macs"]),
            params=int(doc["params"]),
            latency_ms=None if doc.get("latency_ms") is None else float(doc["latency_ms"]),
            metrics={str(k): float(v) for k, v in dict(doc.get("metrics") or {}).items()},
            origin=str(doc.get("origin", "")),
        )


@dataclass(frozen=True)
class Budget:
    """Upper limits on a network's costs; ``None``: no limit on that cost."""

    max_macs: float | None = None
    max_params: float | None = None
    max_latency_ms: float | None = None

    def __post_init__(self) -> None:
        for name, value in self.limits().items():
            if not (math.isfinite(value) and value > 0):
                raise UsageError(f"--max-{name.replace('_', '-')} must be > 0, got {value!r}")

    def limits(self) -> dict[str, float]:
        """The limits set, by cost name (``macs``, ``params``, ``latency_ms``)."""
        pairs = (("macs", self.max_macs), ("params", self.max_params))
        out = {k: float(v) for k, v in pairs if v is not None}
        if self.max_latency_ms is not None:
            out["latency_ms"] = float(self.max_latency_ms)
        return out

    @property
    def empty(self) -> bool:
        return not self.limits()

    def admits(self, c: Candidate) -> bool:
        """Whether ``c`` keeps every limit."""
        limits: dict[CostName, float] = self.limits()  # type: ignore[assignment]
        return all(c.cost(name) <= limit for name, limit in limits.items())

    @property
    def cost(self) -> CostName:
        """The cost a search trades against the metric: latency when it is limited, else
        MACs, else parameters when only they are limited."""
        if self.max_latency_ms is not None:
            return "latency_ms"
        if self.max_params is not None and self.max_macs is None:
            return "params"
        return "macs"

    def to_dict(self) -> dict[str, float | None]:
        return asdict(self)


def ranking(metrics: Sequence[Metric]) -> list[Metric]:
    """The ranked metrics, primary first: the primary decides, the others break ties."""
    return [m for m in metrics if m.higher_is_better is not None]


def goodness(c: Candidate, metrics: Sequence[Metric]) -> tuple[float, ...]:
    """A key that is larger for a better candidate: each ranked metric, signed so larger is
    better, in order of rank (the primary first)."""
    return tuple(
        c.metrics[m.name] if m.higher_is_better else -c.metrics[m.name] for m in ranking(metrics)
    )


def pareto_front(
    candidates: Iterable[Candidate], metrics: Sequence[Metric], cost: CostName = "macs"
) -> list[Candidate]:
    """The candidates no other beats on both ``cost`` and metric, cheapest first; each member
    is strictly better than all cheaper ones (ties on cost keep the better one)."""
    ordered = sorted(
        candidates, key=lambda c: (c.cost(cost), tuple(-g for g in goodness(c, metrics)), c.network)
    )
    front: list[Candidate] = []
    for c in ordered:
        # equal costs sort best first, so a later one of the same cost is never better
        if not front or goodness(c, metrics) > goodness(front[-1], metrics):
            front.append(c)
    return front


def choose(
    candidates: Iterable[Candidate],
    uniform: Iterable[Candidate],
    metrics: Sequence[Metric],
    budget: Budget,
    min_gain: float = 0.0,
) -> tuple[Candidate | None, Candidate | None, Candidate | None]:
    """``(chosen, best, best_uniform)`` within ``budget``: ``best`` is the best candidate,
    ``chosen`` is ``best`` unless it beats the best uniform width by less than ``min_gain``
    on the primary metric, in which case the uniform width is chosen: a lead smaller than the
    validation set's noise is more likely the luck of the best of many measurements than a
    better network."""
    best = best_within(candidates, metrics, budget)
    best_uniform = best_within(uniform, metrics, budget)
    if best is None or best_uniform is None:
        return best, best, best_uniform
    primary = ranking(metrics)[0]
    lead = best.metrics[primary.name] - best_uniform.metrics[primary.name]
    lead = lead if primary.higher_is_better else -lead
    return (best if lead >= min_gain else best_uniform), best, best_uniform


def best_within(
    candidates: Iterable[Candidate], metrics: Sequence[Metric], budget: Budget
) -> Candidate | None:
    """The best candidate keeping every limit of ``budget`` (ties: the cheaper in MACs, then
    the network key, so the choice is deterministic); ``None`` when none fits."""
    inside = [c for c in candidates if budget.admits(c)]
    if not inside:
        return None
    return max(inside, key=lambda c: (goodness(c, metrics), -c.macs, c.network))
