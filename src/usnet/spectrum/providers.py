"""How a task's quality is measured for the spectrum: metrics and providers.

A :class:`MetricProvider` names its metrics (and whether higher is better), evaluates a model at
a width and may offer BN calibration data, so the spectrum and width selection stay
task-agnostic. :func:`metric_provider` builds one from a checkpoint's training config through
the task it names (:mod:`usnet.tasks`: each task's ``provider`` module, beside the code that
evaluates it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..nn import WidthConfig


@dataclass(frozen=True)
class Metric:
    """One quality measure of a task.

    ``higher_is_better`` ranks widths (``None``: descriptive only, e.g. a standard deviation);
    ``fraction`` values lie in [0, 1] and are shown as percentages; ``unit`` labels axes;
    ``spread`` names the metric holding this one's standard deviation (e.g. the return's over
    episodes), which plots draw as a band.
    """

    name: str
    label: str
    higher_is_better: bool | None = True
    fraction: bool = False
    unit: str = ""
    spread: str = ""

    def show(self, value: float | None) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        return f"{100 * value:.2f}" if self.fraction else f"{value:.4g}"

    @property
    def heading(self) -> str:
        """Column/axis title with its unit, e.g. ``top-1 accuracy (%)``."""
        unit = "%" if self.fraction else self.unit
        return f"{self.label} ({unit})" if unit else self.label

    def better(self, a: float, b: float) -> bool:
        """Whether ``a`` is strictly better than ``b``."""
        return a > b if self.higher_is_better is not False else a < b

    def reaches(self, value: float, target: float) -> bool:
        """Whether ``value`` meets ``target`` (at least for higher-is-better, at most otherwise)."""
        return value >= target if self.higher_is_better is not False else value <= target



def find_metric(metrics: Sequence[Metric], name: str, where: str = "this spectrum") -> Metric:
    """The metric called ``name``; a ``ValueError`` listing the measured ones otherwise."""
    for m in metrics:
        if m.name == name:
            return m
    raise ValueError(f"metric {name!r} is not in {where}; measured: {[m.name for m in metrics]}")


@dataclass
class MetricProvider:
    """How one task's quality is measured: ``provider(model, width) -> {metric: value}``.

    ``metrics`` declares the names returned (the first ranked one is the *primary* metric);
    ``calibration`` returns BN calibration inputs (a loader of ``x`` or ``(x, y)`` batches), or
    is ``None`` when no data is known; ``references`` are fixed points drawn with the spectrum
    (e.g. bicubic upscaling for super-resolution).
    """

    task: str
    metrics: tuple[Metric, ...]
    evaluate: Callable[[nn.Module, WidthConfig], Mapping[str, float]]
    calibration: Callable[[], Iterable] | None = None
    num_samples: int = 2000
    calibration_method: str = "exact"
    dataset: str = ""
    references: dict[str, dict[str, float]] = field(default_factory=dict)
    #: What ``evaluate`` measures on: ``test`` (the data set's evaluation split), ``validation``
    #: (training images held out of training) or ``train`` (training images the model saw: a
    #: checkpoint without a validation split); ``data_note`` says it in words.
    split: str = "test"
    data_note: str = ""
    #: How many samples ``evaluate`` measures on, when known.
    samples: int | None = None

    def __post_init__(self) -> None:
        if not any(m.higher_is_better is not None for m in self.metrics):
            raise ValueError(f"metric provider for {self.task!r} declares no ranked metric")

    def __call__(self, model: nn.Module, width: WidthConfig) -> dict[str, float]:
        got = dict(self.evaluate(model, width))
        missing = [m.name for m in self.metrics if m.name not in got]
        if missing:
            raise ValueError(f"{self.task} metrics {missing} missing from evaluate's result {got}")
        return {k: float(v) for k, v in got.items() if isinstance(v, (int, float))}

    @property
    def primary(self) -> Metric:
        return next(m for m in self.metrics if m.higher_is_better is not None)


@dataclass(frozen=True)
class ProviderOptions:
    """What a user may change about a checkpoint's evaluation data."""

    data_root: str | None = None
    max_eval_samples: int | None = None
    num_samples: int | None = None  # calibration images; None: the training config's
    #: ``test``: the evaluation split; ``validation``: images held out of training (a search
    #: must not look at the test set; without a held-out split, a seeded subset of training
    #: images, and the provider's ``split`` says ``train``).
    split: str = "test"


def metric_provider(
    model: nn.Module, meta: Mapping[str, Any], options: ProviderOptions | None = None
) -> MetricProvider:
    """The metric provider for ``model`` from its checkpoint metadata: the training config
    (``meta["config"]``) is validated by its task's schema and the task (:mod:`usnet.tasks`,
    the one registry) builds the provider."""
    from ..tasks import get_task, task_config  # the tasks build on this module's types

    config = meta.get("config")
    if not isinstance(config, Mapping):
        raise ValueError(
            "the checkpoint's metadata has no training config (meta key 'config'), so its "
            "evaluation data is unknown; measure costs only (--no-metric)"
        )
    options = options or ProviderOptions()
    if options.max_eval_samples is not None and options.max_eval_samples < 1:
        raise ValueError(f"max_eval_samples must be >= 1, got {options.max_eval_samples}")
    if "task" not in config and isinstance(meta.get("task"), str):
        config = {**config, "task": meta["task"]}
    if options.split not in ("test", "validation"):
        raise ValueError(f"split must be 'test' or 'validation', got {options.split!r}")
    cfg = task_config(config, source="checkpoint config")
    provider = get_task(cfg.task).metric_provider(model, cfg, options)
    if options.split == "validation" and provider.split == "test":
        raise ValueError(
            f"a {cfg.task} checkpoint has no validation split to measure on (its task measures "
            "the test split only)"
        )
    return provider
