"""Evaluating a width grid after (or during) training, shared by the ranks of a DDP run.

Each rank calibrates and evaluates every ``world_size``-th width of the grid (on the whole test
set); rank 0 gathers the metrics and every width's batch-norm statistics, so its checkpoint holds
them all. No rank waits in a barrier while another one works through the whole grid (on an
ImageNet grid that outlasts NCCL's timeout).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import nn

from ..nn import USBatchNorm2d, Width, width_space
from .distributed import DistInfo


class Evaluation(Protocol):
    """A task's evaluation of a model (a :class:`usnet.spectrum.MetricProvider`)."""

    def measure(self, model: nn.Module, widths: Sequence[Width]) -> dict[Width, dict[str, float]]:
        """Metrics per width, calibrating first the widths that need it and have no statistics."""
        ...


def _stats_of(model: nn.Module, widths: Sequence[Width]) -> dict[str, Any]:
    """The calibrated statistics of ``widths`` (on the CPU), to send to another rank."""
    space = width_space(model)
    configs = [space.canonical(w) for w in widths]
    entries = [(c, space.calibrated[c]) for c in configs if c in space.calibrated]
    keys = {key for _, key in entries}
    norms: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}
    for name, bn in model.named_modules():
        if isinstance(bn, USBatchNorm2d):
            found = {k: bn.get_stats(k) for k in keys}
            norms[name] = {k: (s[0].cpu(), s[1].cpu()) for k, s in found.items() if s is not None}
    return {"calibrated": entries, "norms": norms}


def _add_stats(model: nn.Module, stats: dict[str, Any]) -> None:
    """Install statistics computed on another rank (:func:`_stats_of`)."""
    modules = dict(model.named_modules())
    for name, per_key in stats["norms"].items():
        bn = modules[name]
        assert isinstance(bn, USBatchNorm2d)
        for key, (mean, var) in per_key.items():
            bn.set_stats(key, mean, var)
    space = width_space(model)
    for config, key in stats["calibrated"]:
        space.calibrated[config] = key


def evaluate_widths(
    evaluation: Evaluation, model: nn.Module, widths: Sequence[Width], info: DistInfo
) -> dict[Width, dict[str, float]]:
    """``evaluation.measure`` over ``widths``, shared by the ranks; every rank must call it.

    Returns every width's metrics (in the order of ``widths``) on rank 0, and this rank's share
    on the others; rank 0's model holds every width's calibrated statistics afterwards.
    """
    if not info.enabled:
        return evaluation.measure(model, widths)
    mine = list(widths[info.rank :: info.world_size])
    results = evaluation.measure(model, mine) if mine else {}
    part = (results, _stats_of(model, mine))
    parts: list[Any] | None = [None] * info.world_size if info.is_main else None
    dist.gather_object(part, parts, dst=0)
    if parts is None:
        return results
    merged: dict[Width, dict[str, float]] = {}
    for rank, (got, stats) in enumerate(parts):
        merged.update(got)
        if rank != info.rank:
            _add_stats(model, stats)
    return {w: merged[w] for w in widths}
