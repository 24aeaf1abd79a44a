"""Super-resolution's metrics for the spectrum: PSNR/SSIM on the checkpoint's test images, with
bicubic upscaling as the reference."""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.utils.data import Subset

from ...spectrum.providers import Metric, MetricProvider, ProviderOptions
from .config import SRConfig
from .data import test_set
from .evaluate import bicubic_metrics, evaluate

SR_METRICS = (
    Metric("psnr", "Y-channel PSNR", True, unit="dB"),
    Metric("ssim", "Y-channel SSIM", True),
)


def metric_provider(
    model: nn.Module, cfg: SRConfig, options: ProviderOptions | None = None
) -> MetricProvider:
    """The test images of the run's config (``options.data_root``: another folder; no BN, so
    no calibration data)."""
    options = options or ProviderOptions()
    test: Any = test_set(cfg, options.data_root)
    if options.max_eval_samples is not None and options.max_eval_samples < len(test):
        test = Subset(test, range(options.max_eval_samples))
    return MetricProvider(
        task="sr",
        metrics=SR_METRICS,
        evaluate=lambda m, w: evaluate(m, w, test),
        dataset=options.data_root or cfg.data.test_dir or "embedded test images",
        references={"bicubic": bicubic_metrics(test, cfg.scale)},
    )
