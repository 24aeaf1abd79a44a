"""Classification's metrics for the spectrum (``usnet spectrum``, ``usnet select``): top-1,
top-5 and cross-entropy on the validation split, BN calibrated from training images."""

from __future__ import annotations

from collections.abc import Iterable, Sized
from typing import Any, cast

from torch import nn

from ...data import calibration_loader, calibration_subset, create_dataset, create_loader
from ...shapes import input_shape
from ...spectrum.providers import Metric, MetricProvider, ProviderOptions
from .config import TrainConfig
from .evaluate import evaluate

#: What a classifier is measured by: the spectrum's columns and the training summary's.
CLASSIFICATION_METRICS = (
    Metric("top1", "top-1 accuracy", True, fraction=True),
    Metric("top5", "top-5 accuracy", True, fraction=True),
    Metric("loss", "cross-entropy", False),
)


def metric_provider(model: nn.Module, cfg: TrainConfig, options: ProviderOptions) -> MetricProvider:
    """Validation data from the checkpoint's config (``options.data_root`` may move it)."""
    data, cal = cfg.data, cfg.calibrate
    root = options.data_root or data.root
    kw: dict[str, Any] = {}
    if data.name == "imagefolder":
        kw["input_size"] = int(input_shape(model)[-1])
    val = create_dataset(data.name, root, "val", augment=False, **kw)
    if options.max_eval_samples is not None and options.max_eval_samples < len(cast(Sized, val)):
        val = calibration_subset(val, options.max_eval_samples, seed=0)  # a seeded random subset
    loader = create_loader(val, data.val_batch_size, shuffle=False, num_workers=data.num_workers)
    num_samples = options.num_samples or cal.num_samples

    def calibration() -> Iterable:
        return calibration_loader(
            data.name, root, num_samples, cal.batch_size, num_workers=data.num_workers, **kw
        )

    return MetricProvider(
        task="classification",
        metrics=CLASSIFICATION_METRICS,
        evaluate=lambda m, w: evaluate(m, loader, w),
        calibration=calibration,
        num_samples=num_samples,
        calibration_method=cal.method,
        dataset=data.name,
    )
