"""The RL schema (``task: rl``, ``configs/rl_*.yaml``): a US actor-critic trained by PPO.

The shared sections keep their meaning: ``train`` (width sampling, seed, device, threads, the
run's length ``total_steps`` in environment steps), ``optim``, ``schedule`` (stepped once per
update: its epochs are updates), ``eval`` and ``output``; ``env`` and ``ppo`` are RL's own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ...config.sections import (
    OptimConfig,
    OutputConfig,
    ScheduleConfig,
    WidthTraining,
    check_schedule,
)
from ...config.typed import ConfigError, setting
from ...config.widths import WidthGrid


@dataclass(frozen=True)
class EnvConfig:
    """A gymnasium id (Atari ids such as ``ALE/Pong-v5`` get the standard wrappers)."""

    id: str = "CartPole-v1"
    num_envs: int = setting(8, ge=1)


@dataclass(frozen=True)
class RLModelConfig:
    """``name`` null: the MLP or the CNN actor-critic, whichever fits the observations.
    ``kwargs`` go to ``create_model`` (hidden, shared, width_min, width_max)."""

    name: str | None = None
    kwargs: dict[str, Any] = setting({})


@dataclass(frozen=True)
class PPOConfig:
    """PPO hyper-parameters; the defaults are RL Baselines3 Zoo's tuned CartPole-v1 recipe
    (8 envs x 32 steps, 20 epochs of full-batch updates, gamma 0.98)."""

    rollout_steps: int = setting(32, ge=1, doc="steps per env between updates")
    epochs: int = setting(20, ge=1, doc="passes over each rollout")
    minibatches: int = setting(1, ge=1)
    gamma: float = setting(0.98, ge=0, le=1)
    gae_lambda: float = setting(0.8, ge=0, le=1)
    clip: float = setting(0.2, gt=0)
    ent_coef: float = setting(0.0, ge=0)
    vf_coef: float = setting(0.5, ge=0)
    reward_clip: float | None = setting(None, gt=0, doc="learning rewards in [-c, c]; Atari 1")
    reward_scale: float = setting(1.0, gt=0, doc="learning rewards times this (values near 1)")


@dataclass(frozen=True)
class RLTraining(WidthTraining):
    """The shared ``train:`` keys (``sampling``... as in classification; ``fixed`` with
    ``widths: [1.0]`` is an individually trained agent) and RL's: the budget ``total_steps``
    (environment steps, all envs together), the distillation coefficients (KL to the largest
    width's policy, MSE to its value), ``rollout_width`` (null: act at the largest width;
    docs/rl.md says why) and ``checkpoint_every`` / ``log_every`` (in updates)."""

    total_steps: int = setting(100_000, ge=1, doc="environment steps, all envs together")
    distill_policy_coef: float = setting(1.0, ge=0)
    distill_value_coef: float = setting(0.5, ge=0)
    rollout_width: float | None = setting(None, gt=0)
    device: str | None = setting("cpu", doc="where the network runs; rollouts stay on the CPU")
    threads: int = setting(1, ge=0, doc="torch CPU threads; 0 = torch's default")
    log_every: int = setting(5, ge=1, doc="updates between log lines")
    checkpoint_every: int = setting(10, ge=1, doc="updates between checkpoints")
    grad_clip: float | None = setting(0.5, gt=0, doc="max gradient norm per minibatch")


@dataclass(frozen=True)
class RLOptimConfig(OptimConfig):
    """Adam with PPO's epsilon, no weight decay."""

    name: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = setting(1e-3, gt=0)
    weight_decay: float = setting(0.0, ge=0)
    eps: float = setting(1e-5, gt=0)


@dataclass(frozen=True)
class RLEvalConfig(WidthGrid):
    """The final spectrum: ``episodes`` episodes (seeds ``seed``, ``seed + 1``...) per width,
    actions sampled from the policy (``greedy``: the most likely action)."""

    widths: str | float | list[float] = "0.25:1.0:0.125"
    episodes: int = setting(10, ge=1)
    seed: int = setting(10_000, ge=0)
    greedy: bool = False


@dataclass(frozen=True)
class RLOutputConfig(OutputConfig):
    dir: str = "runs/rl"


@dataclass(frozen=True)
class RLConfig:
    """A PPO run of a US actor-critic (``task: rl``); defaults: CartPole-v1 on a CPU."""

    task: Literal["rl"] = "rl"
    model: RLModelConfig = field(default_factory=RLModelConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    train: RLTraining = field(default_factory=RLTraining)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    optim: RLOptimConfig = field(default_factory=RLOptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    eval: RLEvalConfig = field(default_factory=RLEvalConfig)
    output: RLOutputConfig = field(default_factory=RLOutputConfig)

    @property
    def batch_size(self) -> int:
        """Environment steps per update (all envs)."""
        return self.env.num_envs * self.ppo.rollout_steps

    @property
    def num_updates(self) -> int:
        return self.train.total_steps // self.batch_size

    def __post_init__(self) -> None:
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
