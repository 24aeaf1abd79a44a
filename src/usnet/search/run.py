"""Search a checkpoint: measure on its validation split, confirm on its test set, write the files.

The validation images come from the checkpoint's training config (``data.val_size`` held out of
training); a checkpoint trained without a split is searched on a seeded subset of its training
images, and every output says so. Measurements are kept in ``CKPT/search_cache/`` (one file per
measuring setup), so a killed search continues where it stopped; the front's test metrics too
(``test-*.json``), so a rerun with another budget measures only the networks new to its report.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import checkpoint
from ..calibration import METHODS, collect_batches, needs_calibration
from ..errors import UsageError
from ..nn import channel_groups
from ..spectrum.providers import MetricProvider, ProviderOptions
from ..tasks import metric_provider
from .confirm import measured_latency, test_metrics, unique
from .core import SearchResult, SearchSettings, run_search
from .costs import CostModel
from .front import Candidate, ranking
from .measure import Measurer, PredictsLatency
from .report import entry, markdown, write
from .store import MetricsStore, SearchStore, fingerprint

log = logging.getLogger("usnet")
CACHE = "search_cache"
#: From this many groups on, a search measures enough networks that fitting the exact cost
#: polynomial (:class:`~usnet.search.costs.CostModel`) costs less than counting each one.
COST_MODEL_GROUPS = 4


@dataclass(frozen=True)
class SearchData:
    """How candidates are measured: ``val_samples`` validation images (``None``: all of the
    held-out split), ``calibration_samples`` training images per candidate with
    ``calibration_method``; ``test``: measure the front on the test set; ``data_root`` moves the
    data folder of the checkpoint's config."""

    val_samples: int | None = 2000
    calibration_samples: int = 500
    calibration_method: str = "single_pass"
    data_root: str | None = None
    test: bool = True
    latency_rounds: int = 30

    def __post_init__(self) -> None:
        if self.calibration_method not in METHODS:
            raise UsageError(
                f"--calibration-method {self.calibration_method!r} is unknown; allowed: "
                f"{list(METHODS)}"
            )
        for name in ("val_samples", "calibration_samples", "latency_rounds"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {value}")


def validation_provider(model: nn.Module, meta: dict[str, Any], data: SearchData) -> MetricProvider:
    options = ProviderOptions(
        data.data_root, data.val_samples, data.calibration_samples, split="validation"
    )
    return metric_provider(model, meta, options)


def search_checkpoint(
    path: str | Path,
    settings: SearchSettings,
    data: SearchData | None = None,
    latency: PredictsLatency | None = None,
    out: str | Path | None = None,
    on_new: Callable[[Candidate], None] | None = None,
) -> dict[str, Any]:
    """Search the checkpoint at ``path`` and write ``out`` (default ``CKPT/search.json``), with
    ``search.md`` and ``search.png`` beside it. Returns the search.json document. ``on_new`` is
    called after each newly measured candidate (progress; tests interrupt there)."""
    data = data or SearchData()
    path = checkpoint.folder_of(path)
    info = checkpoint.read_info(path)
    model = checkpoint.load(path)
    meta = info["meta"]
    if _trained_channels_last(meta):  # as it was trained: on a CPU ~2x faster convolutions
        model = model.to(memory_format=torch.channels_last)
    if settings.budget.max_latency_ms is not None and latency is None:
        raise UsageError("--max-latency-ms needs a latency model (usnet latency CKPT builds one)")
    val = validation_provider(model, meta, data)
    if val.split != "validation":
        log.warning("no validation split in %s: searching on %s", path, val.data_note)
    batches = (
        collect_batches(val.calibration(), data.calibration_samples)
        if needs_calibration(model) and val.calibration is not None
        else []
    )
    measuring = {
        "save_id": info["save_id"],
        "validation": [val.split, val.data_note],
        "calibration": [data.calibration_samples, data.calibration_method],
        "threads": torch.get_num_threads(),
        "latency": None if latency is None else _latency_id(latency),
    }
    guard = lambda: checkpoint.locked(path)  # noqa: E731  every writer of the folder holds it
    store = SearchStore(path / CACHE / f"{fingerprint(measuring)}.json", measuring, guard)
    slimmable = [g for g in channel_groups(model) if g.slimmable]
    counter = CostModel.when_needed(model) if len(slimmable) >= COST_MODEL_GROUPS else None
    measurer = Measurer(
        model,
        val,
        store,
        batches,
        data.calibration_samples,
        data.calibration_method,
        latency,
        on_new,
        counter,
    )
    result = run_search(model, measurer, val.metrics, settings, val.samples)
    doc = _document(path, info, model, meta, settings, data, val, result)
    out = Path(out) if out is not None else path / "search.json"
    metric = ranking(val.metrics)[0]
    groups = list(result.space.groups)
    with checkpoint.locked(path) if out.parent == path else contextlib.nullcontext():
        write(doc, out)
        out.with_suffix(".md").write_text(markdown(doc, metric, groups))
        from .plot import plot_search  # matplotlib only when plotting

        plot_search(
            doc,
            [c.to_dict() for c in result.candidates],
            [c.to_dict() for c in result.uniform],
            metric,
            out.with_suffix(".png"),
        )
    return doc


def _trained_channels_last(meta: dict[str, Any]) -> bool:
    config = meta.get("config")
    train = config.get("train") if isinstance(config, dict) else None
    return isinstance(train, dict) and bool(train.get("channels_last"))


def _latency_id(latency: PredictsLatency) -> dict[str, Any]:
    """What a latency model's predictions depend on (its device and fitted numbers)."""
    return {
        "environment": getattr(latency, "environment", None),
        "fit": [getattr(latency, "intercept", None), getattr(latency, "coefficients", None)],
    }


def _document(
    path: Path,
    info: dict[str, Any],
    model: nn.Module,
    meta: dict[str, Any],
    settings: SearchSettings,
    data: SearchData,
    val: MetricProvider,
    result: SearchResult,
) -> dict[str, Any]:
    reported = unique([*result.front, result.chosen, result.best, result.best_uniform])
    tests: dict[str, dict[str, float]] = {}
    test_note = "not measured (--no-test)"
    if data.test:
        test = metric_provider(model, meta, ProviderOptions(data.data_root))
        setup = {
            "save_id": info["save_id"],
            "test": [test.split, test.data_note],
            "calibration": [test.num_samples, test.calibration_method],
            "threads": torch.get_num_threads(),
        }
        known = MetricsStore(
            path / CACHE / f"test-{fingerprint(setup)}.json",
            setup,
            lambda: checkpoint.locked(path),
        )
        tests = test_metrics(model, reported, test, known.metrics, known.add)
        test_note = (
            f"{test.data_note}, each network calibrated from {test.num_samples} training images "
            f"({test.calibration_method})"
        )
    timed = measured_latency(model, reported, data.latency_rounds)

    def e(c: Candidate | None) -> dict[str, Any] | None:
        return None if c is None else entry(c, tests, timed)

    return {
        "checkpoint": str(path),
        "save_id": info["save_id"],
        "model": str(info.get("arch")),
        "method": settings.method,
        "seed": settings.seed,
        "evolution": (
            {
                "population": settings.evolution.population,
                "generations": settings.evolution.generations,
            }
            if settings.method == "evolution"
            else None
        ),
        "step": settings.step,
        "budget": settings.budget.to_dict(),
        "cost": result.cost,
        "metric": ranking(val.metrics)[0].name,
        "groups": list(result.space.groups),
        "validation": {"split": val.split, "note": val.data_note, "samples": data.val_samples},
        "calibration": {"num_samples": data.calibration_samples, "method": data.calibration_method},
        "test": {"note": test_note},
        "latency": {
            "measured": f"batch 1, median of {data.latency_rounds} interleaved rounds",
            "threads": torch.get_num_threads(),
        },
        "candidates": len(result.candidates),
        "measured": result.measured,
        "resumed": result.resumed,
        "seconds": result.seconds,
        "front": [e(c) for c in result.front],
        "min_gain": result.min_gain,
        "chosen": e(result.chosen),
        "best": e(result.best),
        "best_uniform": e(result.best_uniform),
        "trace": [c.network for c in result.trace],
        "uniform": [
            {"width": c.width, "macs": c.macs, "metrics": c.metrics} for c in result.uniform
        ],
    }
