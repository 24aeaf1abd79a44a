"""Classification as a task of the one trainer: cross-entropy with soft-label distillation,
batches from the training split, BN calibration then top-1/top-5 at each evaluated width."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from ...nn import Width, width_value
from ...spectrum.providers import MetricProvider, ProviderOptions
from ...spectrum.tables import format_table
from ...training import Plan, Run, TrainTask
from ...training.batches import LoaderBatches
from ...training.sampling import width_size
from .config import TrainConfig
from .data import build_model, train_loader
from .loss import ClassificationLoss
from .provider import CLASSIFICATION_METRICS, metric_provider


class ClassificationTask(TrainTask[TrainConfig]):
    """What :func:`usnet.training.train` needs to train a classifier."""

    name = "classification"
    config = TrainConfig
    primary = "top1"

    def plan(self, cfg: TrainConfig) -> Plan:
        return Plan.of_epochs(cfg.train, cfg.eval)

    def build_model(self, cfg: TrainConfig) -> nn.Module:
        return build_model(cfg)

    def batches(self, cfg: TrainConfig, model: nn.Module, run: Run) -> LoaderBatches:
        loader = train_loader(cfg, run.world_size, run.world_size > 1, run.device)
        return LoaderBatches(loader, cfg.train.max_steps_per_epoch)

    def loss(self, cfg: TrainConfig) -> ClassificationLoss:
        return ClassificationLoss(cfg.train.label_smoothing)

    def metric_provider(
        self, model: nn.Module, cfg: TrainConfig, options: ProviderOptions | None = None
    ) -> MetricProvider:
        return metric_provider(model, cfg, options)

    def report(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        results: dict[Width, dict[str, float]],
        out: Path,
        history: Sequence[Mapping[str, Any]],
    ) -> tuple[Any, str]:
        """The checkpoint's ``results`` (one row per width; a per-group width as its
        ``{group: width}``) and the Markdown table printed."""
        rows = [{"width": width_value(w), **m} for w, m in results.items()]
        return rows, format_results(model, results)


def format_results(model: nn.Module, results: dict[Width, dict[str, float]]) -> str:
    """The per-width validation summary as a Markdown table (the spectrum's formatter), widest
    first."""
    from ...profile import macs

    ordered = sorted(results.items(), key=lambda item: width_size(item[0]), reverse=True)
    rows = [{"width": width_value(w), "macs": macs(model, w), **m} for w, m in ordered]
    return format_table(rows, "markdown", CLASSIFICATION_METRICS[:2])


TASK = ClassificationTask()
