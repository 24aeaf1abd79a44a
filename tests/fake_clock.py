"""A fake clock that a model's forward advances by a schedule: timings without timing luck."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from usnet.nn import Width, get_width


class ScheduledClock:
    """``clock()`` returns seconds; each (non-meta) forward of ``model`` advances it by
    ``cost(width, call, nth)`` milliseconds: ``call`` counts every timed forward, ``nth`` those
    at this width. ``calls`` records the width of each forward in order."""

    def __init__(self, model: nn.Module, cost: Callable[[Width, int, int], float]) -> None:
        self.now = 0.0
        self.calls: list[Width] = []
        self.cost = cost
        model.register_forward_pre_hook(self._tick)

    def __call__(self) -> float:
        return self.now

    def _tick(self, module: nn.Module, args: tuple) -> None:
        if args and getattr(args[0], "is_meta", False):
            return  # MACs are counted on meta tensors: not a timed run
        w = get_width(module)
        nth = self.calls.count(w)
        self.now += self.cost(w, len(self.calls), nth) / 1000.0
        self.calls.append(w)
