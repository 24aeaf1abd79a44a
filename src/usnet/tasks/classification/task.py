"""Classification as a task of the training loop: cross-entropy with soft-label distillation,
BN calibration then top-1/top-5 at each evaluated width."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...calibration import calibrate
from ...data.loader import EpochLoader
from ...spectrum.providers import MetricProvider, ProviderOptions
from ...spectrum.tables import format_table
from ...training.loop import TrainedByLoop
from .config import TrainConfig
from .data import build_model, calibration_data, test_loader, train_loader
from .evaluate import evaluate
from .loss import ClassificationLoss
from .provider import CLASSIFICATION_METRICS, metric_provider


class ClassificationTask(TrainedByLoop):
    """What :func:`usnet.training.loop.train` needs to train a classifier."""

    name = "classification"
    config = TrainConfig
    primary = "top1"

    def build_model(self, cfg: TrainConfig) -> nn.Module:
        return build_model(cfg)

    def train_loader(
        self, cfg: TrainConfig, world_size: int, distributed: bool, device: torch.device
    ) -> EpochLoader:
        return train_loader(cfg, world_size, distributed, device)

    def steps_per_epoch(self, cfg: TrainConfig, loader: EpochLoader) -> int:
        cap = cfg.train.max_steps_per_epoch
        return len(loader) if cap is None else min(len(loader), cap)

    def loss(self, cfg: TrainConfig) -> ClassificationLoss:
        return ClassificationLoss(cfg.train.label_smoothing)

    def evaluate(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        widths: Sequence[float],
        device: torch.device,
        max_samples: int | None = None,
    ) -> dict[float, dict[str, float]]:
        """Calibrate ``widths`` on training images, then evaluate them on the test split."""
        c = cfg.calibrate
        calibrate(model, calibration_data(cfg), widths, c.num_samples, c.method, progress=False)
        loader = test_loader(cfg, max_samples)
        return {w: evaluate(model, loader, w, device) for w in widths}

    def report(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        results: dict[float, dict[str, float]],
        out: Path,
        history: list[dict[str, Any]],
    ) -> tuple[Any, str]:
        """The checkpoint's ``results`` (one row per width) and the Markdown table printed."""
        return [{"width": w, **m} for w, m in results.items()], format_results(model, results)

    def metric_provider(
        self, model: nn.Module, cfg: TrainConfig, options: ProviderOptions
    ) -> MetricProvider:
        return metric_provider(model, cfg, options)


def format_results(model: nn.Module, results: dict[float, dict[str, float]]) -> str:
    """The per-width validation summary as a Markdown table (the spectrum's formatter)."""
    from ...profile import macs

    rows = [{"width": w, "macs": macs(model, w), **m} for w, m in sorted(results.items())[::-1]]
    return format_table(rows, "markdown", CLASSIFICATION_METRICS[:2])


TASK = ClassificationTask()
