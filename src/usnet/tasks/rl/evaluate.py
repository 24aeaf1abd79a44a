"""Evaluation of an agent: mean episodic return at a width, and the metric provider that puts
it into the spectrum (:mod:`usnet.spectrum`), so ``usnet spectrum`` and the end of an RL run
measure agents like any other US model."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...errors import UsageError
from ...nn import WidthConfig
from ...nn import width as at_width
from ...spectrum.providers import Metric, MetricProvider, ProviderOptions
from .config import RLConfig
from .envs import make_vector_env


@torch.no_grad()
def evaluate(
    model: nn.Module,
    width: WidthConfig,
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
        raise UsageError("env_id is needed: the model does not record its environment")
    if not isinstance(episodes, int) or episodes < 1:
        raise UsageError(f"episodes must be a positive int, got {episodes!r}")
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


RL_METRICS = (
    Metric("return_mean", "mean episodic return", True, spread="return_std"),
    Metric("return_std", "return std", None),
)


def metric_provider(
    model: nn.Module, cfg: RLConfig, options: ProviderOptions | None = None
) -> MetricProvider:
    """Mean return over the run's evaluation episodes (``options.max_eval_samples``: fewer
    episodes); no BN, so no calibration data."""
    options = options or ProviderOptions()
    episodes = options.max_eval_samples or cfg.eval.episodes
    return MetricProvider(
        task="rl",
        metrics=RL_METRICS,
        evaluate=lambda m, w: evaluate(m, w, cfg.env.id, episodes, cfg.eval.seed, cfg.eval.greedy),
        dataset=cfg.env.id,
    )
