"""Reinforcement learning as a task: PPO's rollout loop, then the spectrum of the evaluated
widths measured as ``usnet spectrum`` measures it (``spectrum.csv/.json/.md/.png`` in the run
folder)."""

from __future__ import annotations

import time
from pathlib import Path

from torch import nn

from ...checkpoint import read_info
from ...spectrum import Spectrum, compute_spectrum, describe, format_table, save_spectrum
from ...spectrum.providers import MetricProvider, ProviderOptions
from ...training.resume import CHECKPOINT
from .config import RLConfig
from .evaluate import metric_provider
from .train import train


class RLTask:
    """A US actor-critic trained by PPO with the sandwich rule."""

    name = "rl"
    config = RLConfig

    def metric_provider(
        self, model: nn.Module, cfg: RLConfig, options: ProviderOptions
    ) -> MetricProvider:
        return metric_provider(model, cfg, options)

    def train(
        self,
        cfg: RLConfig,
        resume: bool = False,
        device: str | None = None,
        progress: bool = True,
        overwrite: bool = False,
    ) -> Path:
        """Train, measure ``eval.widths``, write and print the spectrum; returns the checkpoint."""
        t0 = time.time()
        model = train(cfg, resume, device, progress, overwrite)
        out = Path(cfg.output.dir)
        # as `usnet spectrum` measures it: eval.episodes per width, latency in interleaved rounds
        provider = metric_provider(model, cfg, ProviderOptions())
        spec = compute_spectrum(
            model, cfg.eval.grid, provider, progress=False, label=f"PPO, {cfg.train.sampling}"
        )
        spec.source = {
            "checkpoint": str(out / CHECKPOINT),
            "save_id": read_info(out / CHECKPOINT)["save_id"],
        }
        write_spectrum(spec, out)
        print(describe(spec))
        print(format_table(spec))
        print(f"trained and evaluated in {time.time() - t0:.0f} s; results in {out}")
        return out / CHECKPOINT


def write_spectrum(spec: Spectrum, out: Path) -> list[Path]:
    """``spectrum.csv/.json/.md`` and ``spectrum.png`` in ``out``, as ``usnet spectrum`` writes."""
    from ...spectrum.plot import plot_spectrum  # matplotlib only when plotting

    return [*save_spectrum(spec, out), plot_spectrum(spec, out / "spectrum.png")]


TASK = RLTask()
