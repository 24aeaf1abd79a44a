"""MACs and parameters of thousands of widths: exact polynomials of the groups' channel counts.

A search asks for the cost of every network it measures or draws, and counting a network's MACs
runs it under torch's FLOP counter (:func:`usnet.profile.macs`: a tenth of a second on a small
CPU model). But a slimmable network's MACs and parameters are sums, over its layers, of
products of at most two groups' active channel counts (a conv: its input and output groups; a
depthwise conv or a norm: one group; a layer that does not slim: a constant), so both are
quadratic polynomials of the counts. :class:`CostModel` counts a few dozen random widths,
solves for the polynomial's coefficients, and then checks it on other random widths; only if
every check is exact does it answer from the polynomial, else it counts each width as before.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Callable

import numpy as np
from torch import nn

from .. import profile
from ..nn import WidthConfig, channel_groups
from .space import counts, width_range

log = logging.getLogger("usnet")
#: Widths per group whose channel counts make up each group's domain.
_FINE = 200


class CostModel:
    """``costs(width) -> (macs, params)``, exact (see the module docstring)."""

    def __init__(
        self,
        model: nn.Module,
        seed: int = 0,
        checks: int = 6,
        macs: Callable[[nn.Module, WidthConfig], int] | None = None,
        params: Callable[[nn.Module, WidthConfig], int] = profile.params,
    ) -> None:
        self.model, self.count_params = model, params
        self.count_macs = macs or (lambda m, w: profile.macs(m, w, meta=False))
        self.groups = [g for g in channel_groups(model) if g.slimmable]
        self.coef: np.ndarray | None = None
        self._fit(random.Random(seed), checks)

    def _domain(self, name: str) -> dict[int, float]:
        """Every channel count the group takes in the range, each with a width giving it."""
        lo, hi = width_range(self.model)
        out: dict[int, float] = {}
        for w in np.linspace(lo, hi, _FINE):
            out.setdefault(counts(self.model, {"*": hi, name: float(w)})[name], float(w))
        return out

    def _features(self, counts: dict[str, int]) -> np.ndarray:
        x = [counts[g.name] / g.full for g in self.groups]
        pairs = [a * b for a, b in itertools.combinations_with_replacement(x, 2)]
        return np.array([1.0, *x, *pairs])

    def _direct(self, width: WidthConfig) -> tuple[int, int]:
        return int(self.count_macs(self.model, width)), int(self.count_params(self.model, width))

    def _fit(self, rng: random.Random, checks: int) -> None:
        domains = {g.name: self._domain(g.name) for g in self.groups}
        unknowns = len(self._features({g.name: g.full for g in self.groups}))
        points = [
            {g.name: domains[g.name][rng.choice(sorted(domains[g.name]))] for g in self.groups}
            for _ in range(unknowns + 8 + checks)
        ]
        rows = np.array([self._features(counts(self.model, w)) for w in points])
        counted = np.array([self._direct(w) for w in points], dtype=float)
        fit = len(points) - checks
        coef, *_ = np.linalg.lstsq(rows[:fit], counted[:fit], rcond=None)
        if np.all(np.abs(rows @ coef - counted) < 0.25):  # the checks too, exactly
            self.coef = coef
        else:
            log.info("costs are not a polynomial of channel counts here: counting each width")

    @property
    def exact(self) -> bool:
        """Whether answers come from the verified polynomial (else each is counted)."""
        return self.coef is not None

    @classmethod
    def when_needed(cls, model: nn.Module) -> Callable[[WidthConfig], tuple[int, int]]:
        """A counter that fits the model on its first question: a resumed search whose costs
        are all stored never pays for the fit."""
        fitted: list[CostModel] = []

        def count(width: WidthConfig) -> tuple[int, int]:
            if not fitted:
                fitted.append(cls(model))
            return fitted[0](width)

        return count

    def __call__(self, width: WidthConfig) -> tuple[int, int]:
        if self.coef is None:
            return self._direct(width)
        macs, params = self._features(counts(self.model, width)) @ self.coef
        return int(round(float(macs))), int(round(float(params)))
