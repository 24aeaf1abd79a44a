"""Classification's calibration data and evaluation, from a run's config: BN statistics from
``calibrate.num_samples`` training images chosen with the run's seed (``train.seed``), then
top-1, top-5 and cross-entropy on the validation split. The trainer, ``usnet calibrate``,
``spectrum``, ``select`` and ``export`` all measure a classifier through :func:`metric_provider`,
so a checkpoint's statistics come from one image subset whichever of them computed them."""

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

#: The seed of the validation subset ``max_eval_samples`` picks: fixed, not the run's, so runs
#: of different seeds (and baselines) are compared on the same images.
EVAL_SUBSET_SEED = 0


def metric_provider(
    model: nn.Module, cfg: TrainConfig, options: ProviderOptions | None = None
) -> MetricProvider:
    """The run's calibration images and validation data (``options`` may move the data folder,
    evaluate a seeded subset, or change the calibration's sample count, estimator or batch)."""
    options = options or ProviderOptions()
    data, cal = cfg.data, cfg.calibrate
    root = options.data_root or data.root
    kw: dict[str, Any] = {}
    if data.name == "imagefolder":  # images cropped to the model's input size
        kw["input_size"] = int(input_shape(model)[-1])
    val = create_dataset(data.name, root, "val", augment=False, **kw)
    if options.max_eval_samples is not None and options.max_eval_samples < len(cast(Sized, val)):
        val = calibration_subset(val, options.max_eval_samples, seed=EVAL_SUBSET_SEED)
    loader = create_loader(val, data.val_batch_size, shuffle=False, num_workers=data.num_workers)
    num_samples = options.num_samples or cal.num_samples
    batch_size = options.calibration_batch_size or cal.batch_size

    def calibration() -> Iterable:
        return calibration_loader(
            data.name,
            root,
            num_samples,
            batch_size,
            seed=cfg.train.seed,
            num_workers=data.num_workers,
            **kw,
        )

    return MetricProvider(
        task="classification",
        metrics=CLASSIFICATION_METRICS,
        evaluate=lambda m, w: evaluate(m, loader, w),
        calibration=calibration,
        num_samples=num_samples,
        calibration_method=options.method or cal.method,
        dataset=data.name,
    )
