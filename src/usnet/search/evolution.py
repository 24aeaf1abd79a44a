"""Evolutionary search under a budget (as Once-for-All's evolution finder): a seeded population
of per-group widths within the budget, improved by mutation and crossover.

Each generation keeps the best quarter as parents; half of the children are mutations of a
random parent (each group re-drawn with probability ``mutate_prob``), half crossovers of two
(each group taken from either). Every network must keep the budget: random draws are repeated
until one fits (and after ``tries`` misses, narrowed a random group at a time until it fits).
The first population also holds the networks of the best uniform widths within the budget.
One ``random.Random(seed)`` drives every choice, so a seed gives the same search.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..errors import UsageError
from ..spectrum.providers import Metric
from .front import Budget, Candidate, goodness
from .measure import Measurer
from .space import Point, SearchSpace


@dataclass(frozen=True)
class EvolutionSettings:
    population: int = 24
    generations: int = 10
    parent_ratio: float = 0.25
    mutate_prob: float = 0.1
    mutation_ratio: float = 0.5
    tries: int = 50

    def __post_init__(self) -> None:
        if self.population < 2 or self.generations < 0:
            raise UsageError(
                f"evolution needs population >= 2 and generations >= 0, got {self.population} "
                f"and {self.generations}"
            )
        for name in ("parent_ratio", "mutate_prob", "mutation_ratio"):
            if not 0 < getattr(self, name) <= 1:
                raise UsageError(f"evolution {name} must lie in (0, 1], got {getattr(self, name)}")


@dataclass
class EvolutionResult:
    """The best network of each generation (the first population's best first)."""

    best: list[Candidate] = field(default_factory=list)


class _Sampler:
    """Points within the budget, drawn with one seeded generator."""

    def __init__(
        self, space: SearchSpace, measurer: Measurer, budget: Budget, rng: random.Random, tries: int
    ) -> None:
        self.space, self.measurer, self.budget, self.rng, self.tries = (
            space,
            measurer,
            budget,
            rng,
            tries,
        )

    def fits(self, point: Point) -> bool:
        return self.budget.admits(self.measurer.costs(self.space.width(point)))

    def draw(self, make: Callable[[], Point]) -> Point:
        """``make()`` until a point fits, then a narrowed one (always fits: the smallest
        network was checked to fit)."""
        point = make()
        for _ in range(self.tries):
            if self.fits(point):
                return point
            point = make()
        while not self.fits(point):
            wide = [i for i, k in enumerate(point) if k > 0]
            i = self.rng.choice(wide)
            point = point[:i] + (point[i] - 1,) + point[i + 1 :]
        return point

    def random(self) -> Point:
        return tuple(self.rng.randrange(len(ls)) for ls in self.space.levels)

    def mutate(self, parent: Point, prob: float) -> Point:
        return tuple(
            self.rng.randrange(len(ls)) if self.rng.random() < prob else k
            for k, ls in zip(parent, self.space.levels, strict=True)
        )

    def cross(self, a: Point, b: Point) -> Point:
        return tuple(x if self.rng.random() < 0.5 else y for x, y in zip(a, b, strict=True))


def evolution(
    space: SearchSpace,
    measurer: Measurer,
    metrics: Sequence[Metric],
    budget: Budget,
    seed: int = 0,
    settings: EvolutionSettings | None = None,
    starts: Sequence[Point] = (),
    on_generation: Callable[[int, Candidate], None] | None = None,
) -> EvolutionResult:
    """Evolve networks of ``space`` within ``budget`` (see the module docstring); ``starts``
    join the first population (e.g. the best uniform widths' points). Returns each
    generation's best."""
    s = settings or EvolutionSettings()
    if budget.empty:
        raise UsageError(
            "evolution searches under a budget: give --max-macs, --max-params or --max-latency-ms"
        )
    sampler = _Sampler(space, measurer, budget, random.Random(seed), s.tries)
    if not sampler.fits(space.smallest):
        smallest = measurer.costs(space.width(space.smallest))
        raise UsageError(
            f"no network fits the budget {budget.limits()}: the smallest has {smallest.macs} MACs, "
            f"{smallest.params} params, latency {smallest.latency_ms} ms"
        )

    def key(p: Point) -> tuple:
        return goodness(measure(p), metrics)

    def measure(p: Point) -> Candidate:
        return measurer.measure(space.width(p), "evolution")

    seen: dict[str, Point] = {}

    def add(pop: list[Point], p: Point) -> None:
        network = measurer.network(space.width(p))
        if network not in seen:
            seen[network] = p
            pop.append(p)

    population: list[Point] = []
    for p in starts:
        if len(population) < s.population // 2 and sampler.fits(p):
            add(population, p)
    for _ in range(100 * s.population):
        if len(population) >= s.population:
            break
        add(population, sampler.draw(sampler.random))
    result = EvolutionResult()
    n_parents = max(1, round(s.parent_ratio * s.population))
    n_mutants = round(s.mutation_ratio * s.population)
    for generation in range(s.generations + 1):
        population.sort(key=lambda p: (key(p), p), reverse=True)
        best = measure(population[0])
        result.best.append(best)
        if on_generation is not None:
            on_generation(generation, best)
        if generation == s.generations:
            break
        parents = population[:n_parents]
        children: list[Point] = list(parents)
        cap = 100 * s.population
        for attempt in range(cap):
            if len(children) >= s.population:
                break
            stuck = attempt >= cap // 2  # crossovers of near-equal parents repeat: mutate too
            crossing = len(children) >= n_parents + n_mutants and len(parents) >= 2
            if crossing and not (stuck and attempt % 2):
                a, b = sampler.rng.sample(parents, 2)
                child = sampler.draw(functools.partial(sampler.cross, a, b))
            else:
                parent = sampler.rng.choice(parents)
                prob = 0.5 if stuck else s.mutate_prob
                child = sampler.draw(functools.partial(sampler.mutate, parent, prob))
            add(children, child)  # a network measured before is not a new child
        population = children
    return result
