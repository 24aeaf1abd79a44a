"""How a task's quality is measured: metrics and providers.

A :class:`MetricProvider` names its metrics (and whether higher is better), evaluates a model at
a width and may offer BN calibration data, so the spectrum and width selection stay
task-agnostic. Each task builds its provider from a run's config (its ``provider`` module,
beside the code that evaluates it), and that provider is the one way a checkpoint of the task
is calibrated and evaluated: by the trainer at the end of every evaluated epoch and by
``usnet calibrate``, ``spectrum``, ``select`` and ``export`` alike
(:func:`usnet.tasks.metric_provider` finds it from a checkpoint's metadata).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from torch import nn

from ..calibration import calibrate, is_calibrated, needs_calibration
from ..errors import UsageError
from ..nn import Width, WidthConfig


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
    raise UsageError(f"metric {name!r} is not in {where}; measured: {[m.name for m in metrics]}")


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
    #: Inputs the last :meth:`calibrate` used (the data may hold fewer than ``num_samples``).
    samples_used: int | None = None
    #: What ``evaluate`` measures on: ``test`` (the data set's evaluation split), ``validation``
    #: (training images held out of training) or ``train`` (training images the model saw: a
    #: checkpoint without a validation split); ``data_note`` says it in words.
    split: str = "test"
    data_note: str = ""
    #: How many samples ``evaluate`` measures on, when known.
    samples: int | None = None

    def __post_init__(self) -> None:
        if not any(m.higher_is_better is not None for m in self.metrics):
            raise UsageError(f"metric provider for {self.task!r} declares no ranked metric")

    def __call__(self, model: nn.Module, width: WidthConfig) -> dict[str, float]:
        got = dict(self.evaluate(model, width))
        missing = [m.name for m in self.metrics if m.name not in got]
        if missing:
            raise UsageError(f"{self.task} metrics {missing} missing from evaluate's result {got}")
        return {k: float(v) for k, v in got.items() if isinstance(v, (int, float))}

    @property
    def primary(self) -> Metric:
        return next(m for m in self.metrics if m.higher_is_better is not None)

    def calibrate(
        self, model: nn.Module, widths: Sequence[WidthConfig], replace: bool = False
    ) -> list[WidthConfig]:
        """Calibrate those of ``widths`` that have no statistics (all of them with ``replace``)
        from this task's calibration data; returns the widths calibrated. A model without
        per-width BN, or a provider without calibration data, calibrates none."""
        if self.calibration is None or not needs_calibration(model):
            return []
        todo = list(widths) if replace else [w for w in widths if not is_calibrated(model, w)]
        if todo:
            self.samples_used = calibrate(
                model, self.calibration(), todo, self.num_samples, self.calibration_method
            )
        return todo

    def measure(self, model: nn.Module, widths: Sequence[Width]) -> dict[Width, dict[str, float]]:
        """Metrics per width (canonical widths: they key the result), calibrating first the
        widths without statistics."""
        self.calibrate(model, widths)
        return {w: self(model, w) for w in widths}


@dataclass(frozen=True)
class ProviderOptions:
    """What a user may change about a checkpoint's evaluation and calibration data (None: as
    the run's config says)."""

    data_root: str | None = None
    max_eval_samples: int | None = None
    num_samples: int | None = None  # calibration images
    method: str | None = None  # calibration estimator
    calibration_batch_size: int | None = None
    #: ``test``: the evaluation split; ``validation``: images held out of training (a search
    #: must not look at the test set; without a held-out split, a seeded subset of training
    #: images, and the provider's ``split`` says ``train``).
    split: str = "test"
