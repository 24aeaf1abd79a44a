"""Reinforcement learning as a task: PPO's rollout loop, then the return of every evaluated
width (``spectrum.json``, ``spectrum.md``, ``spectrum.png`` in the run folder)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

from ...rl.evaluate import format_table, plot, spectrum
from ...training.resume import CHECKPOINT
from .config import RLConfig
from .train import train


class RLTask:
    """A US actor-critic trained by PPO with the sandwich rule."""

    name = "rl"
    config = RLConfig

    def train(
        self,
        cfg: RLConfig,
        resume: bool = False,
        device: str | None = None,
        progress: bool = True,
        overwrite: bool = False,
    ) -> Path:
        """Train, evaluate ``eval.widths``, write and print the spectrum; returns the checkpoint."""
        t0 = time.time()
        model = train(cfg, resume, device, progress, overwrite)
        ev, out = cfg.eval, Path(cfg.output.dir)
        rows = spectrum(model, ev.grid, cfg.env.id, ev.episodes, ev.seed, ev.greedy)
        write_spectrum(rows, out, f"{cfg.env.id} ({cfg.train.sampling})")
        print(format_table(rows))
        print(f"trained and evaluated in {time.time() - t0:.0f} s; results in {out}")
        return out / CHECKPOINT


def write_spectrum(rows: Sequence[dict], out: Path, title: str) -> None:
    """``spectrum.json``, a Markdown table and a plot of return against MACs."""
    (out / "spectrum.json").write_text(json.dumps(list(rows), indent=2) + "\n")
    (out / "spectrum.md").write_text(format_table(rows) + "\n")
    plot({title: rows}, out / "spectrum.png", title)


TASK = RLTask()
