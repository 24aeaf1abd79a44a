"""Typed configuration of an RL run (``task: rl`` YAML files, ``configs/rl_*.yaml``).

Loaded with :func:`usnet.config.build_config` (``RLConfig``), so unknown keys, wrong types and
out-of-range values are errors that name the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ..config import ConfigError, setting
from ..config.widths import WidthGrid, check_width_sampling


@dataclass(frozen=True)
class EnvConfig:
    """A gymnasium id (Atari ids such as ``ALE/Pong-v5`` get the standard wrappers)."""

    id: str = "CartPole-v1"
    num_envs: int = setting(8, ge=1)


@dataclass(frozen=True)
class ModelConfig:
    """``name`` null: the MLP or the CNN actor-critic, whichever fits the observations.
    ``kwargs`` go to ``create_model`` (hidden, shared, width_min, width_max)."""

    name: str | None = None
    kwargs: dict[str, Any] = setting({})


@dataclass(frozen=True)
class PPOConfig:
    """PPO hyper-parameters; the defaults are RL Baselines3 Zoo's tuned CartPole-v1 recipe
    (8 envs x 32 steps, 20 epochs of full-batch updates, lr 1e-3 annealed, gamma 0.98)."""

    total_steps: int = setting(100_000, ge=1, doc="environment steps, all envs together")
    rollout_steps: int = setting(32, ge=1, doc="steps per env between updates")
    epochs: int = setting(20, ge=1)
    minibatches: int = setting(1, ge=1)
    lr: float = setting(1e-3, gt=0)
    anneal_lr: bool = True
    gamma: float = setting(0.98, ge=0, le=1)
    gae_lambda: float = setting(0.8, ge=0, le=1)
    clip: float = setting(0.2, gt=0)
    ent_coef: float = setting(0.0, ge=0)
    vf_coef: float = setting(0.5, ge=0)
    max_grad_norm: float = setting(0.5, gt=0)
    reward_clip: float | None = setting(None, gt=0, doc="learning rewards in [-c, c]; Atari 1")
    reward_scale: float = setting(1.0, gt=0, doc="learning rewards times this (values near 1)")


@dataclass(frozen=True)
class WidthsConfig:
    """Which widths each update trains, and at which width the agent acts.

    ``sampling`` as in classification training (``sandwich``: largest, smallest and
    ``num_widths - 2`` random; ``fixed``: the one width in ``widths``, an individually trained
    agent). ``distill``: narrow widths also learn the largest width's detached policy (KL) and
    value (MSE). ``rollout_width`` null: rollouts at the largest width (docs/rl.md says why).
    """

    sampling: Literal["sandwich", "random", "switches", "fixed"] = "sandwich"
    num_widths: int = setting(4, ge=1)
    widths: list[float] | None = setting(None, gt=0)
    distill: bool = True
    distill_policy_coef: float = setting(1.0, ge=0)
    distill_value_coef: float = setting(0.5, ge=0)
    rollout_width: float | None = setting(None, gt=0)

    def __post_init__(self) -> None:
        check_width_sampling(self.sampling, self.num_widths, self.widths)


@dataclass(frozen=True)
class EvalConfig(WidthGrid):
    """The final spectrum: ``episodes`` episodes (seeds ``seed``, ``seed + 1``...) per width."""

    episodes: int = setting(10, ge=1)
    widths: str | float | list[float] = "0.25:1.0:0.125"
    seed: int = setting(10_000, ge=0)
    greedy: bool = False


@dataclass(frozen=True)
class RLConfig:
    """A PPO run of a US actor-critic (``task: rl``); defaults: CartPole-v1 on a CPU."""

    task: Literal["rl"] = "rl"
    seed: int = setting(0, ge=0)
    threads: int = setting(1, ge=0, doc="torch CPU threads; 0 = torch's default")
    device: str = setting("cpu", doc="where the network runs: cpu, cuda, cuda:1...")
    out_dir: str = "runs/rl"
    checkpoint_every: int = setting(10, ge=1, doc="updates between checkpoints")
    log_every: int = setting(5, ge=1, doc="updates between log lines")
    env: EnvConfig = field(default_factory=EnvConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    train: WidthsConfig = field(default_factory=WidthsConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @property
    def batch_size(self) -> int:
        return self.env.num_envs * self.ppo.rollout_steps

    @property
    def num_updates(self) -> int:
        return self.ppo.total_steps // self.batch_size

    def __post_init__(self) -> None:
        if self.batch_size % self.ppo.minibatches:
            raise ConfigError(
                "ppo.minibatches",
                f"must divide env.num_envs * ppo.rollout_steps ({self.batch_size}), "
                f"got {self.ppo.minibatches}",
            )
        if self.ppo.total_steps < self.batch_size:
            raise ConfigError(
                "ppo.total_steps",
                f"must be at least one rollout (env.num_envs * ppo.rollout_steps = "
                f"{self.batch_size}), got {self.ppo.total_steps}",
            )
