"""The RL schema (``task: rl``, ``configs/rl_*.yaml``): a US actor-critic trained by PPO.

The shared sections keep their meaning: ``train`` (width sampling, seed, device, threads, the
run's length ``total_steps`` in environment steps), ``optim``, ``schedule`` (stepped once per
update: its epochs are updates), ``eval`` and ``output``; ``env`` and ``ppo`` are RL's own.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ...config.errors import ConfigError
from ...config.sections import (
    OptimConfig,
    OutputConfig,
    ScheduleConfig,
    WidthTraining,
    check_schedule,
)
from ...config.typed import Section, Seed
from ...config.widths import WidthGrid


class EnvConfig(Section):
    """A gymnasium id (Atari ids such as ``ALE/Pong-v5`` get the standard wrappers)."""

    id: str = "CartPole-v1"
    num_envs: int = Field(8, ge=1)


class RLModelConfig(Section):
    """``name`` null: the MLP or the CNN actor-critic, whichever fits the observations.
    ``kwargs`` go to ``create_model`` (hidden, shared, width_min, width_max)."""

    name: str | None = None
    kwargs: dict[str, Any] = Field(default_factory=dict)


class PPOConfig(Section):
    """PPO hyper-parameters; the defaults are RL Baselines3 Zoo's tuned CartPole-v1 recipe
    (8 envs x 32 steps, 20 epochs of full-batch updates, gamma 0.98)."""

    rollout_steps: int = Field(32, ge=1, description="steps per env between updates")
    epochs: int = Field(20, ge=1, description="passes over each rollout")
    minibatches: int = Field(1, ge=1)
    gamma: float = Field(0.98, ge=0, le=1)
    gae_lambda: float = Field(0.8, ge=0, le=1)
    clip: float = Field(0.2, gt=0)
    ent_coef: float = Field(0.0, ge=0)
    vf_coef: float = Field(0.5, ge=0)
    reward_clip: float | None = Field(
        None, gt=0, description="learning rewards in [-c, c]; Atari 1"
    )
    reward_scale: float = Field(
        1.0, gt=0, description="learning rewards times this (values near 1)"
    )


class RLTraining(WidthTraining):
    """The shared ``train:`` keys (``sampling``... as in classification; ``fixed`` with
    ``widths: [1.0]`` is an individually trained agent) and RL's: the budget ``total_steps``
    (environment steps, all envs together), the distillation coefficients (KL to the largest
    width's policy, MSE to its value), ``rollout_width`` (null: act at the largest width;
    docs/rl.md says why) and ``checkpoint_every`` / ``log_every`` (in updates)."""

    total_steps: int = Field(100_000, ge=1, description="environment steps, all envs together")
    distill_policy_coef: float = Field(1.0, ge=0)
    distill_value_coef: float = Field(0.5, ge=0)
    rollout_width: float | None = Field(None, gt=0)
    device: str | None = Field(
        "cpu", description="where the network runs; rollouts stay on the CPU"
    )
    threads: int = Field(1, ge=0, description="torch CPU threads; 0 = torch's default")
    log_every: int = Field(5, ge=1, description="updates between log lines")
    checkpoint_every: int = Field(10, ge=1, description="updates between checkpoints")
    grad_clip: float | None = Field(0.5, gt=0, description="max gradient norm per minibatch")

    def check(self) -> None:
        super().check()
        per_group = [w for w in self.widths or [] if isinstance(w, dict)]
        if per_group:  # an agent's rollouts act at one uniform rollout_width
            raise ConfigError(
                "widths",
                f"a per-group width ({per_group[0]!r}) is not supported for RL agents (rollouts "
                "act at one uniform train.rollout_width); give a number",
            )


class RLOptimConfig(OptimConfig):
    """Adam with PPO's epsilon, no weight decay."""

    name: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    eps: float = Field(1e-5, gt=0)


class RLEvalConfig(WidthGrid):
    """The final spectrum: ``episodes`` episodes (seeds ``seed``, ``seed + 1``...) per width,
    actions sampled from the policy (``greedy``: the most likely action)."""

    widths: str | float | list[float] = "0.25:1.0:0.125"
    episodes: int = Field(10, ge=1)
    seed: Seed = 10_000
    greedy: bool = False


class RLOutputConfig(OutputConfig):
    dir: str = "runs/rl"


class RLConfig(Section):
    """A PPO run of a US actor-critic (``task: rl``); defaults: CartPole-v1 on a CPU."""

    task: Literal["rl"] = "rl"
    model: RLModelConfig = Field(default_factory=RLModelConfig)
    env: EnvConfig = Field(default_factory=EnvConfig)
    train: RLTraining = Field(default_factory=RLTraining)
    ppo: PPOConfig = Field(default_factory=PPOConfig)
    optim: RLOptimConfig = Field(default_factory=RLOptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    eval: RLEvalConfig = Field(default_factory=RLEvalConfig)
    output: RLOutputConfig = Field(default_factory=RLOutputConfig)

    @property
    def batch_size(self) -> int:
        """Environment steps per update (all envs)."""
        return self.env.num_envs * self.ppo.rollout_steps

    @property
    def num_updates(self) -> int:
        return self.train.total_steps // self.batch_size

    def check(self) -> None:
        super().check()
        if self.batch_size % self.ppo.minibatches:
            raise ConfigError(
                "ppo.minibatches",
                f"must divide env.num_envs * ppo.rollout_steps ({self.batch_size}), "
                f"got {self.ppo.minibatches}",
            )
        if self.train.total_steps < self.batch_size:
            raise ConfigError(
                "train.total_steps",
                f"must be at least one rollout (env.num_envs * ppo.rollout_steps = "
                f"{self.batch_size}), got {self.train.total_steps}",
            )
        check_schedule(self.schedule, self.num_updates, self.optim.lr, "updates")
