"""The space a search walks: per channel group, the widths that select distinct networks.

A width config gives every slimmable channel group its own width; widths that round to the same
active channel count are the same network, so each group's axis is the list of its distinct
counts (its *levels*) between the range's ends, in steps of ``step`` of width (AutoSlim narrows
by one divisor of channels at a time; a width step is the same on small groups and coarser on
wide ones, which bounds the number of steps a greedy pass takes). A point of the space is one
level index per group.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from torch import nn

from ..errors import UsageError
from ..nn import Width, WidthConfig, channel_groups, parse_widths, width_space

#: A point of the space: one level index per group, in the space's group order.
Point = tuple[int, ...]
#: A width as JSON holds it: one number, or ``{group: width}``.
JsonWidth = float | dict[str, float]


def network(model: nn.Module, width: WidthConfig) -> str:
    """The key of the network ``width`` selects (widths that round alike share it)."""
    return width_space(model).resolve(width)[1]


def counts(model: nn.Module, width: WidthConfig) -> dict[str, int]:
    """Active channels of every group at ``width``."""
    return width_space(model).channels(width)


def width_range(model: nn.Module) -> tuple[float, float]:
    space = width_space(model)
    return space.width_min, space.width_max


@dataclass(frozen=True)
class SearchSpace:
    """Every slimmable group's levels: ascending widths, each selecting a different count."""

    groups: tuple[str, ...]
    levels: tuple[tuple[float, ...], ...]
    width_min: float
    width_max: float

    @property
    def full(self) -> Point:
        """The point of the full network (every group at its widest level)."""
        return tuple(len(ls) - 1 for ls in self.levels)

    @property
    def smallest(self) -> Point:
        return tuple(0 for _ in self.levels)

    @property
    def size(self) -> float:
        """How many networks the space holds (a float: it overflows ints quickly)."""
        return math.prod(float(len(ls)) for ls in self.levels)

    def width(self, point: Point) -> dict[str, float]:
        """The width config of ``point``."""
        return {g: ls[i] for g, ls, i in zip(self.groups, self.levels, point, strict=True)}

    def point(self, width: WidthConfig, model: nn.Module) -> Point:
        """The point whose networks' channel counts equal ``width``'s, group by group; a width
        between two levels maps to the level at or below it."""
        target = counts(model, width)
        point = []
        for g, ls in zip(self.groups, self.levels, strict=True):
            level_counts = [counts(model, {"*": self.width_max, g: w})[g] for w in ls]
            below = [i for i, c in enumerate(level_counts) if c <= target[g]]
            point.append(below[-1] if below else 0)
        return tuple(point)


def search_space(model: nn.Module, step: float = 0.05) -> SearchSpace:
    """The levels of every slimmable group of ``model`` at widths ``w_min, w_min + step, ...,
    w_max`` (the ends always included), one width per distinct channel count: the width
    nearest the count's share of the group."""
    if not (isinstance(step, float | int) and 0 < step <= 1):
        raise UsageError(f"step must be a width step in (0, 1], got {step!r}")
    lo, hi = width_range(model)
    grid = parse_widths(f"{lo}:{hi}:{step}")
    if grid[-1] < hi - 1e-9:
        grid.append(hi)
    groups = [g for g in channel_groups(model) if g.slimmable]
    if not groups:
        raise UsageError("the model has no slimmable channel group to search")
    levels = []
    for g in groups:
        by_count: dict[int, list[float]] = {}
        for w in grid:
            by_count.setdefault(counts(model, {"*": hi, g.name: w})[g.name], []).append(w)
        levels.append(tuple(_nearest(ws, c / g.full, hi) for c, ws in sorted(by_count.items())))
    return SearchSpace(tuple(g.name for g in groups), tuple(levels), lo, hi)


def _nearest(widths: list[float], share: float, width_max: float) -> float:
    """The width of ``widths`` nearest a group's ``share`` of channels."""
    return min(widths, key=lambda w: abs(w / width_max - share))


def to_json_width(width: Width | WidthConfig) -> JsonWidth:
    """A width as JSON holds it (a canonical per-group tuple becomes a mapping)."""
    if isinstance(width, tuple):
        return {k: float(v) for k, v in width}
    if isinstance(width, Mapping):
        return {str(k): float(v) for k, v in width.items()}
    return float(width)


def uniform_grid(model: nn.Module, step: float = 0.025) -> list[float]:
    """The uniform widths of the range in steps of ``step`` (the spectrum's default grid), the
    full width included; one per distinct network: the width nearest the network's share of
    channels (as the spectrum names it)."""
    lo, hi = width_range(model)
    grid = parse_widths(f"{lo}:{hi}:{step}")
    if grid[-1] < hi - 1e-9:
        grid.append(hi)
    slim = [g for g in channel_groups(model) if g.slimmable]
    full = sum(g.full for g in slim)
    members: dict[str, list[float]] = {}
    for w in grid:
        members.setdefault(network(model, w), []).append(w)
    chosen = []
    for ws in members.values():
        active = counts(model, ws[0])
        share = sum(active[g.name] for g in slim) / full
        chosen.append(min(ws, key=lambda w: (abs(w / hi - share), -w)))
    return sorted(chosen)


def describe(width: JsonWidth, groups: Sequence[str] = ()) -> str:
    """A width as a short text: ``0.5`` or ``stem=0.5,block1=0.75,...``."""
    if isinstance(width, Mapping):
        names = groups or list(width)
        return ",".join(f"{g}={width[g]:g}" for g in names if g in width)
    return f"{width:g}"
