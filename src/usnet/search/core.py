"""One search: the uniform widths, then greedy slimming or evolution, then the front.

The uniform widths of the range are always candidates, measured the same way as the searched
ones, so the network chosen for a budget is never worse on the validation images than the best
uniform width within it; and it is that uniform width unless another network leads it by at
least ``min_gain`` (by default :data:`MIN_GAIN_STANDARD_ERRORS` standard errors of the uniform
width's validation accuracy): the best of hundreds of noisy measurements leads by luck as often
as by merit. Two, not one: over 36 searches of Fashion-MNIST US-MobileNets (docs/search.md), a
lead of one standard error chose a per-group network 8 times and 6 of them were worse than the
uniform width on the test set; no lead reached two.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from torch import nn

from ..errors import UsageError
from ..logs import progress_bar
from ..spectrum.providers import Metric
from .evolution import EvolutionSettings, evolution
from .front import Budget, Candidate, CostName, best_within, choose, goodness, pareto_front, ranking
from .greedy import greedy, steps
from .measure import Measurer
from .space import SearchSpace, search_space, uniform_grid

#: The default ``min_gain``, in standard errors of the best uniform width's validation accuracy.
MIN_GAIN_STANDARD_ERRORS = 2.0

Method = Literal["greedy", "evolution"]
METHODS: tuple[Method, ...] = ("greedy", "evolution")


@dataclass(frozen=True)
class SearchSettings:
    """What to search: ``method``, ``budget``, the width ``step`` of each group's levels, the
    uniform widths' ``uniform_step``, the ``seed`` (evolution) and evolution's settings."""

    method: Method = "greedy"
    budget: Budget = field(default_factory=Budget)
    step: float = 0.05
    uniform_step: float = 0.025
    seed: int = 0
    evolution: EvolutionSettings = field(default_factory=EvolutionSettings)
    #: The least lead on the primary metric over the best uniform width within the budget for
    #: which a non-uniform network is chosen (:func:`~usnet.search.front.choose`); ``None``:
    #: :data:`MIN_GAIN_STANDARD_ERRORS` standard errors of the uniform width's metric on the
    #: validation images (a fraction metric measured on a known number of them; else 0).
    min_gain: float | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UsageError(f"--method {self.method!r} is unknown; allowed: {list(METHODS)}")
        for name in ("step", "uniform_step"):
            value = getattr(self, name)
            if not (isinstance(value, float | int) and 0 < value <= 1):
                raise UsageError(
                    f"--{name.replace('_', '-')} must be a width step in (0, 1], got {value!r}"
                )
        if self.min_gain is not None and not (math.isfinite(self.min_gain) and self.min_gain >= 0):
            raise UsageError(f"--min-gain must be >= 0, got {self.min_gain!r}")
        if self.method == "evolution" and self.budget.empty:  # before minutes of measuring
            raise UsageError(
                "evolution searches under a budget: give --max-macs, --max-params or "
                "--max-latency-ms"
            )


@dataclass
class SearchResult:
    """Everything a search measured and what it keeps."""

    space: SearchSpace
    cost: CostName
    candidates: list[Candidate]
    uniform: list[Candidate]
    front: list[Candidate]
    chosen: Candidate | None
    #: The best candidate within the budget on the validation images (``chosen`` unless its
    #: lead over ``best_uniform`` is below ``min_gain``).
    best: Candidate | None
    best_uniform: Candidate | None
    #: The greedy pass (full network first) or each generation's best.
    trace: list[Candidate]
    min_gain: float
    seconds: float
    measured: int
    resumed: int


def run_search(
    model: nn.Module,
    measurer: Measurer,
    metrics: Sequence[Metric],
    settings: SearchSettings,
    samples: int | None = None,
) -> SearchResult:
    """Search ``model``'s per-group widths (see the module docstring); ``samples``: how many
    validation images each candidate is measured on (for the default ``min_gain``)."""
    start = time.perf_counter()
    space = search_space(model, settings.step)
    budget, cost = settings.budget, settings.budget.cost
    grid = uniform_grid(model, settings.uniform_step)
    uniform = [
        measurer.measure(w, "uniform")
        for w in progress_bar(grid, desc="uniform widths", unit="net")
    ]
    if settings.method == "greedy":
        bar = progress_bar(total=steps(space), desc="greedy", unit="step")

        def on_step(step: int, kept: Candidate) -> None:
            bar.update(1)
            bar.set_postfix(macs=kept.macs, measured=measurer.new, refresh=False)

        try:
            trace = greedy(space, measurer, metrics, cost, on_step).path
        finally:
            bar.close()
    else:
        gens = settings.evolution.generations
        bar = progress_bar(total=gens + 1, desc="evolution", unit="gen")
        inside = sorted(
            (c for c in uniform if budget.admits(c)),
            key=lambda c: goodness(c, metrics),
            reverse=True,
        )
        starts = [space.point(c.width, model) for c in inside]

        def on_generation(generation: int, best: Candidate) -> None:
            bar.update(1)
            bar.set_postfix(best=_first(best, metrics), measured=measurer.new, refresh=False)

        try:
            trace = evolution(
                space,
                measurer,
                metrics,
                budget,
                settings.seed,
                settings.evolution,
                starts,
                on_generation,
            ).best
        finally:
            bar.close()
    candidates = list(measurer.touched.values())
    min_gain = settings.min_gain
    if min_gain is None:
        error = standard_error(best_within(uniform, metrics, budget), metrics, samples)
        min_gain = MIN_GAIN_STANDARD_ERRORS * error
    chosen, best, best_uniform = (
        (None, None, None)
        if budget.empty
        else choose(candidates, uniform, metrics, budget, min_gain)
    )
    return SearchResult(
        space=space,
        cost=cost,
        candidates=candidates,
        uniform=uniform,
        front=pareto_front(candidates, metrics, cost),
        chosen=chosen,
        best=best,
        best_uniform=best_uniform,
        trace=trace,
        min_gain=min_gain,
        seconds=time.perf_counter() - start,
        measured=measurer.new,
        resumed=measurer.store.resumed,
    )


def standard_error(c: Candidate | None, metrics: Sequence[Metric], samples: int | None) -> float:
    """The binomial standard error of ``c``'s primary metric on ``samples`` images, when it is
    a fraction (top-1); else 0."""
    primary = ranking(metrics)[0]
    if c is None or not samples or not primary.fraction:
        return 0.0
    p = min(max(c.metrics[primary.name], 0.0), 1.0)
    return math.sqrt(p * (1 - p) / samples)


def _first(c: Candidate, metrics: Sequence[Metric]) -> str:
    m = next(m for m in metrics if m.higher_is_better is not None)
    return m.show(c.metrics.get(m.name))
