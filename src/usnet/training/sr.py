"""Where :mod:`usnet.metric_providers` finds super-resolution's spectrum metrics until the
spectrum package takes the providers over; the task lives in :mod:`usnet.tasks.sr`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn
from torch.utils.data import Subset

from ..config import build_config
from ..metric_providers import Metric, MetricProvider, ProviderOptions, register_metric_provider
from ..tasks.sr.config import SRConfig
from ..tasks.sr.data import test_set
from ..tasks.sr.evaluate import bicubic_metrics, evaluate


@register_metric_provider("sr")
def _super_resolution(
    model: nn.Module, config: Mapping[str, Any], options: ProviderOptions
) -> MetricProvider:
    """PSNR/SSIM on the checkpoint's test images for ``usnet spectrum``; bicubic as reference."""
    cfg = build_config(SRConfig, config, source="checkpoint config")
    test: Any = test_set(cfg, options.data_root)
    if options.max_eval_samples is not None and options.max_eval_samples < len(test):
        test = Subset(test, range(options.max_eval_samples))
    return MetricProvider(
        task="sr",
        metrics=(
            Metric("psnr", "Y-channel PSNR", True, unit="dB"),
            Metric("ssim", "Y-channel SSIM", True),
        ),
        evaluate=lambda m, w: evaluate(m, w, test),
        dataset=options.data_root or cfg.data.test_dir or "embedded test images",
        references={"bicubic": bicubic_metrics(test, cfg.scale)},
    )
