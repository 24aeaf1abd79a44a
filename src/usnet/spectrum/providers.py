"""How a task's quality is measured for the spectrum: metrics, providers and their registry.

A :class:`MetricProvider` names its metrics (and whether higher is better), evaluates a model at
a width and may offer BN calibration data, so the spectrum and width selection stay
task-agnostic. :func:`metric_provider` builds one from a checkpoint's training config,
dispatching on ``model.task`` through :func:`register_metric_provider`. Classification is
registered here (its metrics are :data:`CLASSIFICATION_METRICS`, also for training summaries);
super-resolution in :mod:`usnet.training.sr` and RL in :mod:`usnet.rl.evaluate`, beside the
code that evaluates them.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterable, Mapping, Sized
from dataclasses import dataclass, field
from typing import Any, cast

from torch import nn

from ..nn import WidthConfig
from ..shapes import input_shape


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


#: ``factory(model, config, options) -> MetricProvider``; ``config`` is the checkpoint's
#: training config as a dict (meta key ``"config"``).
ProviderFactory = Callable[[nn.Module, Mapping[str, Any], ProviderOptions], MetricProvider]
_PROVIDERS: dict[str, ProviderFactory] = {}
#: Tasks whose provider lives beside the task's own code (and registers itself there), imported
#: only when such a checkpoint is measured: a classifier's spectrum needs no SR or gymnasium code.
_PROVIDER_MODULES = {"sr": "usnet.training.sr", "rl": "usnet.rl.evaluate"}


def register_metric_provider(task: str) -> Callable[[ProviderFactory], ProviderFactory]:
    """Register how models of ``task`` (``model.task``) are evaluated from their training config."""

    def deco(fn: ProviderFactory) -> ProviderFactory:
        _PROVIDERS[task] = fn
        return fn

    return deco


def metric_provider(
    model: nn.Module, meta: Mapping[str, Any], options: ProviderOptions | None = None
) -> MetricProvider:
    """The metric provider for ``model`` from its checkpoint metadata (training config inside)."""
    task = getattr(model, "task", None) or meta.get("task") or "classification"
    if task not in _PROVIDERS and task not in _PROVIDER_MODULES:
        known = sorted(_PROVIDERS.keys() | _PROVIDER_MODULES.keys())
        raise ValueError(f"no metric provider for task {task!r}; known: {known}")
    config = meta.get("config")
    if not isinstance(config, Mapping):
        raise ValueError(
            "the checkpoint's metadata has no training config (meta key 'config'), so its "
            "evaluation data is unknown; measure costs only (--no-metric)"
        )
    options = options or ProviderOptions()
    if options.max_eval_samples is not None and options.max_eval_samples < 1:
        raise ValueError(f"max_eval_samples must be >= 1, got {options.max_eval_samples}")
    if task not in _PROVIDERS:
        importlib.import_module(_PROVIDER_MODULES[task])  # registers it
    return _PROVIDERS[task](model, config, options)


def _section(config: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = config.get(name) or {}
    if not isinstance(value, Mapping):
        raise ValueError(f"checkpoint config {name!r} must be a mapping, got {value!r}")
    return value


#: What a classifier is measured by: the spectrum's columns and the training summary's.
CLASSIFICATION_METRICS = (
    Metric("top1", "top-1 accuracy", True, fraction=True),
    Metric("top5", "top-5 accuracy", True, fraction=True),
    Metric("loss", "cross-entropy", False),
)


@register_metric_provider("classification")
def _classification(
    model: nn.Module, config: Mapping[str, Any], options: ProviderOptions
) -> MetricProvider:
    from ..data import calibration_loader, calibration_subset, create_dataset, create_loader
    from ..training.evaluate import evaluate

    data, cal = _section(config, "data"), _section(config, "calibrate")
    name = data.get("name")
    if not name:
        raise ValueError("checkpoint config has no data.name: the validation set is unknown")
    root = options.data_root or data.get("root")
    kw: dict[str, Any] = {}
    if name in ("imagefolder", "imagenet"):
        kw["input_size"] = int(input_shape(model)[-1])
    val = create_dataset(name, root, "val", augment=False, **kw)
    if options.max_eval_samples is not None and options.max_eval_samples < len(cast(Sized, val)):
        val = calibration_subset(val, options.max_eval_samples, seed=0)  # a seeded random subset
    batch = int(data.get("val_batch_size", 500))
    workers = int(data.get("num_workers", 0))
    loader = create_loader(val, batch, shuffle=False, num_workers=workers)
    num_samples = options.num_samples or int(cal.get("num_samples", 2000))

    def calibration() -> Iterable:
        return calibration_loader(
            name, root, num_samples, int(cal.get("batch_size", 200)), num_workers=workers, **kw
        )

    return MetricProvider(
        task="classification",
        metrics=CLASSIFICATION_METRICS,
        evaluate=lambda m, w: evaluate(m, loader, w),
        calibration=calibration,
        num_samples=num_samples,
        calibration_method=str(cal.get("method", "exact")),
        dataset=str(name),
    )
