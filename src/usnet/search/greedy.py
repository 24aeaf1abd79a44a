"""Greedy slimming (AutoSlim, Yu & Huang 2019): one pass from the full network to the smallest.

From the full width, each step tries narrowing every channel group by one level (the next
narrower distinct channel count), measures each try, and keeps the one that loses least of the
primary metric per unit of cost saved. Every network passed on the way, and every one tried, is
a measured candidate, so one pass gives networks for every budget down to the smallest. Ties
are broken by the next ranked metrics, then by the larger saving, then by group order: the
pass is deterministic, which is also what makes a killed search resumable by replay.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..spectrum.providers import Metric
from .front import Candidate, CostName, goodness
from .measure import Measurer
from .space import Point, SearchSpace


@dataclass
class GreedyResult:
    """The pass: the networks kept at each step, full network first (``path``), and how many
    tries each step measured."""

    path: list[Candidate] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    tries: list[int] = field(default_factory=list)


def narrower(point: Point) -> list[tuple[int, Point]]:
    """Every point one level narrower in one group: ``(group index, point)``."""
    return [(i, point[:i] + (k - 1,) + point[i + 1 :]) for i, k in enumerate(point) if k > 0]


def _score(
    here: Candidate, there: Candidate, metrics: Sequence[Metric], cost: CostName
) -> tuple[float, ...]:
    """Smaller is a better step: the loss of each ranked metric per unit of cost saved, then
    the saving itself (larger first). A step that saves nothing ranks last."""
    saved = here.cost(cost) - there.cost(cost)
    losses = [a - b for a, b in zip(goodness(here, metrics), goodness(there, metrics), strict=True)]
    if saved <= 0:
        return (math.inf,) * len(losses) + (0.0,)
    return (*(loss / saved for loss in losses), -saved)


def greedy(
    space: SearchSpace,
    measurer: Measurer,
    metrics: Sequence[Metric],
    cost: CostName = "macs",
    on_step: Callable[[int, Candidate], None] | None = None,
) -> GreedyResult:
    """Slim ``space`` greedily from its full point to its smallest (see the module docstring).

    ``on_step(step, kept)`` is called after each step (progress). Returns the path.
    """
    point = space.full
    here = measurer.measure(space.width(point), "greedy")
    result = GreedyResult([here], [point], [])
    step = 0
    while any(point):
        tries = []
        for group, p in narrower(point):
            there = measurer.measure(space.width(p), "greedy")
            tries.append((_score(here, there, metrics, cost), group, p, there))
        _, _, point, here = min(tries, key=lambda t: (t[0], t[1]))
        result.path.append(here)
        result.points.append(point)
        result.tries.append(len(tries))
        step += 1
        if on_step is not None:
            on_step(step, here)
    return result


def steps(space: SearchSpace) -> int:
    """How many steps a greedy pass over ``space`` takes (one level of one group each)."""
    return sum(len(levels) - 1 for levels in space.levels)
