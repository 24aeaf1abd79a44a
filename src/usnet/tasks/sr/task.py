"""Super-resolution as a task of the one trainer: the sandwich rule without BN. The largest
width learns L1 to the HR image; the others L1 to its detached output (inplace distillation) or,
with ``inplace_distillation: false``, to the HR image too. No BN, so nothing to calibrate: every
width is ready to evaluate."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from torch import nn

from ...data.sr import SRTestSet
from ...nn import Width, width_value
from ...spectrum.providers import MetricProvider, ProviderOptions
from ...spectrum.tables import format_table
from ...training import Plan, Run, TrainTask
from ...training.batches import LoaderBatches
from ...training.resume import CHECKPOINT
from .config import SRConfig
from .data import build_model, test_set, train_loader
from .evaluate import bicubic_metrics
from .loss import L1Loss
from .provider import SR_METRICS, metric_provider


class SRTask(TrainTask[SRConfig]):
    """What :func:`usnet.training.train` needs to train a super-resolution network."""

    name = "sr"
    config = SRConfig
    primary = "psnr"

    def plan(self, cfg: SRConfig) -> Plan:
        return Plan.of_epochs(cfg.train, cfg.eval)

    def build_model(self, cfg: SRConfig) -> nn.Module:
        return build_model(cfg)

    def batches(self, cfg: SRConfig, model: nn.Module, run: Run) -> LoaderBatches:
        return LoaderBatches(train_loader(cfg, run.world_size, run.world_size > 1))

    def loss(self, cfg: SRConfig) -> L1Loss:
        return L1Loss()

    def report(
        self,
        model: nn.Module,
        cfg: SRConfig,
        results: dict[Width, dict[str, float]],
        out: Path,
        history: Sequence[Mapping[str, Any]],
    ) -> tuple[Any, str]:
        """PSNR, SSIM and MACs per width with the bicubic reference; also ``results.json``."""
        summary = final_results(model, test_set(cfg), results)
        summary["train_time_s"] = round(sum(float(r["seconds"]) for r in history), 1)
        summary["checkpoint"] = str(out / CHECKPOINT)
        (out / "results.json").write_text(json.dumps({**summary, "history": history}, indent=2))
        text = format_results(summary) + f"\nresults: {out / 'results.json'}"
        return summary, text

    def metric_provider(
        self, model: nn.Module, cfg: SRConfig, options: ProviderOptions | None = None
    ) -> MetricProvider:
        return metric_provider(model, cfg, options)


def final_results(
    model: nn.Module, test: SRTestSet, results: dict[Width, dict[str, float]]
) -> dict[str, Any]:
    """The results with MACs (per LR pixel x the profiling input) and the bicubic reference."""
    from ...profile import macs

    rows = [
        {"width": width_value(w), "macs": macs(model, w), **{k: round(v, 4) for k, v in m.items()}}
        for w, m in results.items()
    ]
    bic = {k: round(v, 4) for k, v in bicubic_metrics(test).items()}
    return {
        "input_size": list(cast(Any, model).input_size),
        "bicubic": bic,
        "widths": rows,
        "test_images": list(test.pairs.names),
    }


def format_results(results: dict[str, Any]) -> str:
    """The results as a Markdown table (the spectrum's formatter), bicubic as the last row."""
    bicubic = {"width": "bicubic", **results["bicubic"]}
    return format_table([*results["widths"], bicubic], "markdown", SR_METRICS)


TASK = SRTask()
