"""Reinforcement learning as a task of the one trainer: a US actor-critic, PPO's rollouts as
its batch source (one trainer epoch = one update), PPO's loss per width, and at the end the
spectrum of the evaluated widths measured as ``usnet spectrum`` measures it
(``spectrum.csv/.json/.md/.png`` in the run folder)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from ...checkpoint import read_info
from ...models.checked import build_from_config
from ...nn import Width, WidthConfig, width_value
from ...spectrum import Spectrum, compute_spectrum, describe, format_table, save_spectrum
from ...spectrum.providers import MetricProvider, ProviderOptions
from ...training import Plan, Run, TrainTask
from ...training.resume import CHECKPOINT
from .config import RLConfig
from .envs import model_kwargs
from .evaluate import metric_provider
from .ppo import PPOLoss
from .rollouts import Rollouts


class RLTask(TrainTask[RLConfig]):
    """A US actor-critic trained by PPO with the sandwich rule."""

    name = "rl"
    config = RLConfig
    primary = "return_mean"

    def plan(self, cfg: RLConfig) -> Plan:
        tc = cfg.train
        return Plan(
            epochs=cfg.num_updates,
            length=f"train.total_steps {tc.total_steps}: {cfg.num_updates} updates",
            record_every=tc.log_every,
            checkpoint_every=tc.checkpoint_every,
            anneal_per_epoch=True,
        )

    def build_model(self, cfg: RLConfig) -> nn.Module:
        """The actor-critic for ``env.id``: shapes from the environment, options from the config."""
        auto, shape = model_kwargs(cfg.env.id)
        kwargs = {**shape, "env_id": cfg.env.id, **cfg.model.kwargs}
        return build_from_config(cfg.model.name or auto, kwargs)

    def batches(self, cfg: RLConfig, model: nn.Module, run: Run) -> Rollouts:
        return Rollouts(cfg, model, run)

    def loss(self, cfg: RLConfig) -> PPOLoss:
        return PPOLoss(cfg.ppo, cfg.train)

    def metric_provider(
        self, model: nn.Module, cfg: RLConfig, options: ProviderOptions | None = None
    ) -> MetricProvider:
        return metric_provider(model, cfg, options)

    def report(
        self,
        model: nn.Module,
        cfg: RLConfig,
        results: dict[Width, dict[str, float]],
        out: Path,
        history: Sequence[Mapping[str, Any]],
    ) -> tuple[Any, str]:
        """The spectrum of ``eval.widths`` (the trainer's returns, with MACs, parameters and
        latency in interleaved rounds), written to the run folder; one row per width."""
        provider = metric_provider(model, cfg)
        measured = dataclasses.replace(provider, evaluate=_measured(results, provider))
        spec = compute_spectrum(model, cfg.eval.grid, measured, label=f"PPO, {cfg.train.sampling}")
        spec.source = {
            "checkpoint": str(out / CHECKPOINT),
            "save_id": read_info(out / CHECKPOINT)["save_id"],
        }
        write_spectrum(spec, out)
        seconds = sum(float(r.get("seconds", 0.0)) for r in history)
        text = "\n".join(
            [
                describe(spec),
                format_table(spec),
                f"trained in {seconds:.0f} s; spectrum in {out}",
            ]
        )
        return [{"width": width_value(w), **m} for w, m in results.items()], text


def _measured(results: dict[Width, dict[str, float]], provider: MetricProvider) -> Any:
    """An evaluation that answers from the trainer's results (episodes are not run twice), and
    runs them for a width the results lack."""

    def evaluate(model: nn.Module, width: WidthConfig) -> Mapping[str, float]:
        if isinstance(width, float):
            for w, metrics in results.items():
                if isinstance(w, float) and abs(w - width) < 1e-9:  # the grid's width, as the spectrum canonicalised it
                    return metrics
        return provider.evaluate(model, width)

    return evaluate


def write_spectrum(spec: Spectrum, out: Path) -> list[Path]:
    """``spectrum.csv/.json/.md`` and ``spectrum.png`` in ``out``, as ``usnet spectrum`` writes."""
    from ...spectrum.plot import plot_spectrum  # matplotlib only when plotting

    return [*save_spectrum(spec, out), plot_spectrum(spec, out / "spectrum.png")]


TASK = RLTask()
