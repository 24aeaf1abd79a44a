"""Evaluation of an agent: mean episodic return at a width, and its spectrum against MACs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import build_config
from ..metric_providers import Metric, MetricProvider, ProviderOptions, register_metric_provider
from ..nn import format_width, get_width
from ..nn import width as at_width
from .config import RLConfig
from .envs import make_vector_env


@torch.no_grad()
def evaluate(
    model: nn.Module,
    width: float,
    env_id: str | None = None,
    episodes: int = 10,
    seed: int = 10_000,
    greedy: bool = False,
) -> dict:
    """Mean and standard deviation of the raw episodic return of ``episodes`` episodes at ``width``.

    The episodes run side by side, copy ``i`` seeded ``seed + i``, each counted once (its first
    episode). ``greedy`` takes the most likely action; otherwise actions are sampled from the
    policy, as in training. ``env_id`` defaults to the environment the model was made for.
    """
    env_id = env_id or getattr(model, "env_id", None)
    if not env_id:
        raise ValueError("env_id is needed: the model does not record its environment")
    if not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes must be a positive int, got {episodes!r}")
    envs = make_vector_env(env_id, episodes)
    generator = torch.Generator().manual_seed(seed)
    returns = np.zeros(episodes)
    running = np.ones(episodes, dtype=bool)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        obs, _ = envs.reset(seed=seed)
        with at_width(model, width):
            while running.any():
                x = torch.from_numpy(np.ascontiguousarray(obs)).to(device)
                logits = model(x)[0].float().cpu()
                if greedy:
                    actions = logits.argmax(-1)
                else:
                    probs = F.softmax(logits, dim=-1)
                    actions = torch.multinomial(probs, 1, generator=generator).squeeze(1)
                obs, r, term, trunc, _ = envs.step(actions.numpy())
                returns += np.where(running, r, 0.0)
                running &= ~(term | trunc)
    finally:
        envs.close()
        model.train(was_training)
    return {
        "width": width,
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "episodes": episodes,
    }


@register_metric_provider("rl")
def _reinforcement_learning(
    model: nn.Module, config: Mapping[str, Any], options: ProviderOptions
) -> MetricProvider:
    """Mean return over the checkpoint's evaluation episodes for ``usnet spectrum``."""
    cfg = build_config(RLConfig, config, source="checkpoint config")
    episodes = options.max_eval_samples or cfg.eval.episodes
    return MetricProvider(
        task="rl",
        metrics=(
            Metric("return_mean", "mean episodic return", True),
            Metric("return_std", "return std", None),
        ),
        evaluate=lambda m, w: evaluate(m, w, cfg.env.id, episodes, cfg.eval.seed, cfg.eval.greedy),
        dataset=cfg.env.id,
    )


def spectrum(
    model: nn.Module,
    widths: Sequence[float],
    env_id: str | None = None,
    episodes: int = 10,
    seed: int = 10_000,
    greedy: bool = False,
) -> list[dict]:
    """One row per width: MACs, parameters and the mean return (return against MACs)."""
    from ..profile import macs, params

    rows = []
    for w in widths:
        row = evaluate(model, w, env_id, episodes, seed, greedy)
        with at_width(model, w):
            row["width"] = format_width(get_width(model))
        row["macs"] = macs(model, w)
        try:
            row["params"] = params(model, w)
        except (ValueError, TypeError, NotImplementedError):
            row["params"] = None  # the exporter does not know this layer layout
        rows.append(row)
    return rows


def format_table(rows: Sequence[dict]) -> str:
    """A Markdown table of a spectrum."""
    lines = ["| width | MACs | params | return (mean ± std) |", "|---|---:|---:|---:|"]
    for r in rows:
        p = "-" if r.get("params") is None else f"{r['params']:,}"
        lines.append(
            f"| {r['width']} | {r['macs']:,} | {p} | "
            f"{r['return_mean']:.1f} ± {r['return_std']:.1f} |"
        )
    return "\n".join(lines)


def plot(curves: dict[str, Sequence[dict]], path: str | Path, title: str = "") -> None:
    """Return against MACs, one line per labelled spectrum (a single point is drawn as a star)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, rows in curves.items():
        x = [r["macs"] for r in rows]
        y = np.array([r["return_mean"] for r in rows])
        s = np.array([r["return_std"] for r in rows])
        if len(rows) == 1:
            ax.errorbar(x, y, yerr=s, fmt="*", markersize=14, capsize=3, label=label)
        else:
            ax.plot(x, y, "o-", label=label)
            ax.fill_between(x, y - s, y + s, alpha=0.2)
    if all(r["return_mean"] >= 0 for rows in curves.values() for r in rows):
        ax.set_ylim(bottom=0)  # returns against their natural floor, not a zoomed-in band
    ax.set_xlabel("MACs per step")
    ax.set_ylabel("mean episodic return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
