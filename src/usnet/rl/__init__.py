"""Universally slimmable reinforcement learning: US actor-critics trained by PPO with the
sandwich rule.

``run(raw, overrides, resume)`` is the ``usnet train`` entry for ``task: rl`` configs;
``evaluate(model, width, ...)`` gives the mean episodic return at one width.
"""

from ..models import actor_critic  # noqa: F401  (registers us_actor_critic_mlp / _cnn)
from .config import RLConfig
from .envs import make_env, make_vector_env
from .evaluate import evaluate
from .train import run, train

__all__ = ["RLConfig", "evaluate", "make_env", "make_vector_env", "run", "train"]
