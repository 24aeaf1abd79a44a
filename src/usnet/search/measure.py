"""Measuring one candidate network: its costs, then BN calibration and the validation metrics.

Every candidate is calibrated with the search's own calibration (post-statistics BN from a few
hundred training images, the same images for every candidate) right before it is measured, even
a width whose statistics the checkpoint already holds: uniform and per-group widths are then
compared on equal terms. Its statistics are dropped once it is measured (the model in memory
ends with none; the checkpoint on disk is not touched). Costs and measurements are cached by
network key (widths that round alike are one network) in a
:class:`~usnet.search.store.SearchStore`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from torch import Tensor, nn

from .. import profile
from ..calibration import calibrate, clear_calibration, needs_calibration
from ..errors import UsageError
from ..nn import WidthConfig
from ..spectrum.providers import MetricProvider
from .front import Candidate
from .space import JsonWidth, network, to_json_width
from .store import SearchStore


class PredictsLatency(Protocol):
    """A latency model (:class:`usnet.latency.LatencyModel`): milliseconds of a width."""

    def predict(self, model: nn.Module, width: WidthConfig) -> float: ...


class Measurer:
    """Costs and validation metrics of ``model``'s networks, cached in ``store``.

    ``calibration`` holds the calibration inputs (CPU tensors, collected once); ``on_new`` is
    called after each new measurement (a progress bar's update); ``counter`` gives a width's
    ``(MACs, params)`` (default: counted by :mod:`usnet.profile`; a
    :class:`~usnet.search.costs.CostModel` answers faster).
    """

    def __init__(
        self,
        model: nn.Module,
        provider: MetricProvider,
        store: SearchStore,
        calibration: Sequence[Tensor] = (),
        num_samples: int = 500,
        method: str = "single_pass",
        latency: PredictsLatency | None = None,
        on_new: Callable[[Candidate], None] | None = None,
        counter: Callable[[WidthConfig], tuple[int, int]] | None = None,
    ) -> None:
        if needs_calibration(model) and not calibration:
            raise UsageError(
                "the model has batch norm to calibrate but no calibration data was given"
            )
        self.model, self.provider, self.store = model, provider, store
        self.calibration, self.num_samples, self.method = list(calibration), num_samples, method
        self.latency = latency
        self.on_new = on_new
        self.counter = counter or (
            lambda w: (int(profile.macs(model, w, meta=False)), int(profile.params(model, w)))
        )
        #: Candidates measured by this process (not found in the store).
        self.new = 0
        #: Every candidate this search asked for, by network key, in order.
        self.touched: dict[str, Candidate] = {}

    def network(self, width: WidthConfig) -> str:
        """The network key of ``width`` (widths that round alike share it)."""
        return network(self.model, width)

    def costs(self, width: WidthConfig) -> Candidate:
        """The candidate of ``width`` with its costs but no metrics (counted once per network)."""
        key = self.network(width)
        found = self.store.candidates.get(key)
        if found is not None:
            return found
        cached = self.store.costs.get(key)
        if cached is None:
            macs, params = self.counter(width)
            cached = {
                "macs": macs,
                "params": params,
                "latency_ms": None
                if self.latency is None
                else float(self.latency.predict(self.model, width)),
            }
            self.store.costs[key] = cached
        return Candidate(_json(width), key, **cached)

    def measure(self, width: WidthConfig, origin: str) -> Candidate:
        """The candidate of ``width`` with its validation metrics (measured once per network)."""
        key = self.network(width)
        found = self.store.candidates.get(key)
        if found is not None:
            self.touched.setdefault(key, found)
            return found
        c = self.costs(width)
        if self.calibration and needs_calibration(self.model):
            calibrate(
                self.model,
                self.calibration,
                [width],
                self.num_samples,
                self.method,
            )
        c.metrics = self.provider(self.model, width)
        # a search calibrates hundreds of networks: keeping their statistics would slow every
        # later count and copy of the model (and grow its memory) for nothing
        clear_calibration(self.model)
        c.origin = origin
        self.store.add(c)
        self.touched[key] = c
        self.new += 1
        if self.on_new is not None:
            self.on_new(c)
        return c


def _json(width: WidthConfig) -> JsonWidth:
    return to_json_width(width)
