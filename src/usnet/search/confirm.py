"""After the search: the front's networks on the test set and timed on this machine.

The search chose on validation images; the test set only reports. Each reported network is
calibrated as every other command calibrates a checkpoint's widths (the training config's
``calibrate`` settings, e.g. 2000 images ``exact``), so its test metrics are comparable with the
uniform spectrum's (``usnet spectrum``). Test metrics already measured with the same setup
(``known``; the search keeps them beside its measurements) are not measured again: a rerun with
another budget reports mostly the same front, and its test set would otherwise cost more than
the replayed search. Latency is measured, batch 1, every network in the same interleaved rounds
(median), as the spectrum measures it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence

from torch import nn

from .. import profile
from ..calibration import calibrate, collect_batches, needs_calibration
from ..errors import UsageError
from ..logs import progress_bar
from ..spectrum.compute import placeholder_stats
from ..spectrum.providers import MetricProvider
from .front import Candidate


def unique(candidates: Sequence[Candidate | None]) -> list[Candidate]:
    """The distinct candidates (by network), in order, without ``None``."""
    seen: dict[str, Candidate] = {}
    for c in candidates:
        if c is not None:
            seen.setdefault(c.network, c)
    return list(seen.values())


def test_metrics(
    model: nn.Module,
    candidates: Sequence[Candidate],
    provider: MetricProvider,
    known: Mapping[str, dict[str, float]] | None = None,
    on_new: Callable[[str, dict[str, float]], None] | None = None,
) -> dict[str, dict[str, float]]:
    """Test metrics per network key (calibrated with ``provider``'s calibration settings);
    those in ``known`` are taken from it, ``on_new(key, metrics)`` follows each new one."""
    known = known or {}
    out = {c.network: dict(known[c.network]) for c in candidates if c.network in known}
    todo = [c for c in candidates if c.network not in out]
    if not todo:
        return out
    batches = None
    if needs_calibration(model):
        if provider.calibration is None:
            raise UsageError("the test metrics need calibration data, which the checkpoint lacks")
        batches = collect_batches(provider.calibration(), provider.num_samples)
    for c in progress_bar(todo, desc="test set", unit="net"):
        if batches is not None:
            calibrate(
                model,
                batches,
                [c.width],
                provider.num_samples,
                provider.calibration_method,
            )
        out[c.network] = provider(model, c.width)
        if on_new is not None:
            on_new(c.network, out[c.network])
    return out


def measured_latency(
    model: nn.Module,
    candidates: Sequence[Candidate],
    rounds: int = 30,
    warmup: int = 5,
) -> dict[str, tuple[float, float, float]]:
    """Batch-1 latency per network key: (median, first quartile, third quartile) in ms."""
    if not candidates:
        return {}
    with contextlib.ExitStack() as stack:
        for c in candidates:  # the values of the statistics do not change the time
            stack.enter_context(placeholder_stats(model, c.width))
        timings = profile.interleaved_latency(
            model, [c.width for c in candidates], 1, rounds, warmup
        )
    return {
        c.network: (t.median_ms, t.q1_ms, t.q3_ms) for c, t in zip(candidates, timings, strict=True)
    }
