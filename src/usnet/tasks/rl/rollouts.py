"""PPO's batch source: each epoch of the trainer is one update, a rollout collected at one width
and then learned from in minibatches.

An epoch collects ``env.num_envs x ppo.rollout_steps`` environment steps with the model at
``train.rollout_width`` (null: the largest width), then yields ``ppo.epochs x ppo.minibatches``
minibatches (:func:`~usnet.tasks.rl.ppo.minibatches`); the trainer takes one optimizer step per
minibatch with the sandwich step and PPO's loss. Actions are sampled with the source's own
generator (saved with the run); the minibatch shuffle draws from the run's generator, as the
widths do.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import torch
from torch import nn

from ...config.widths import check_model_widths
from ...errors import UsageError
from ...nn import width_space
from ...training import Run
from .config import RLConfig
from .envs import make_vector_env
from .ppo import Collector, minibatches

#: Episodes whose mean return a recorded row reports (the training curve).
RECENT = 20


def env_seed(cfg: RLConfig, epoch: int) -> int:
    """Training envs are seeded ``seed * 1000 + epoch`` when a run (re)starts at ``epoch``;
    evaluation uses other seeds (``eval.seed``)."""
    return cfg.train.seed * 1000 + epoch


class Rollouts:
    """The trainer's batch source for PPO (one update per epoch)."""

    unit = "samples"

    def __init__(self, cfg: RLConfig, model: nn.Module, run: Run) -> None:
        if run.world_size > 1:
            raise UsageError(
                f"RL trains in one process (its rollouts are not sharded over ranks); run "
                f"usnet train without torchrun, not on {run.world_size} ranks"
            )
        self.cfg, self.model, self.run = cfg, model, run
        self.rollout_width = cfg.train.rollout_width or width_space(model).width_max
        check_model_widths(model, {"train.rollout_width": [self.rollout_width]})
        self.actions = torch.Generator().manual_seed(env_seed(cfg, 0))
        self.generators = {"actions": self.actions}
        self.steps = cfg.ppo.epochs * cfg.ppo.minibatches
        self.envs: gym.vector.VectorEnv | None = None
        self.collector: Collector | None = None
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The first call starts the environments, seeded for ``epoch`` (a resumed run
        restarts them with fresh episodes)."""
        if self.collector is None:
            self.envs = make_vector_env(self.cfg.env.id, self.cfg.env.num_envs)
            self.collector = Collector(self.envs, env_seed(self.cfg, epoch), self.actions)
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        if self.collector is None:
            raise RuntimeError("set_epoch() must start the environments before a rollout")
        ppo = self.cfg.ppo
        rollout = self.collector.collect(
            self.model,
            ppo.rollout_steps,
            self.rollout_width,
            ppo.gamma,
            ppo.reward_clip,
            ppo.reward_scale,
        )
        return minibatches(rollout, ppo, self.run.generator, self.run.device)

    def summary(self) -> dict[str, float]:
        """Environment steps so far and the mean raw return of the last :data:`RECENT`
        finished episodes (absent until one has finished)."""
        row: dict[str, float] = {"step": (self.epoch + 1) * self.cfg.batch_size}
        episodes = self.collector.episodes[-RECENT:] if self.collector else []
        if episodes:
            row["return"] = sum(r for r, _ in episodes) / len(episodes)
        return row

    def close(self) -> None:
        if self.envs is not None:
            self.envs.close()
