"""gymnasium environments: classic control as is, Atari with the standard preprocessing.

Atari ids (``ALE/Pong-v5``, ``PongNoFrameskip-v4``) get ``AtariPreprocessing`` (no-op starts,
frame skip 4 with max-pooling, 84x84 grey) and a 4-frame stack, as in the PPO/DQN papers. The
rewards stay raw here (evaluation reports game scores); PPO clips them for learning if its
config says so. Only discrete action spaces are supported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from ...errors import UsageError


def is_atari(env_id: str) -> bool:
    return env_id.startswith("ALE/") or "NoFrameskip" in env_id


def _register_ale() -> None:
    try:
        import ale_py
    except ImportError:
        raise UsageError(
            "Atari environments need ale-py (it ships the ROMs): pip install 'usnet[rl]' "
            "or pip install ale-py opencv-python-headless"
        ) from None
    gym.register_envs(ale_py)


def make_env(env_id: str) -> gym.Env:
    """One environment, wrapped for training and evaluation alike."""
    if not isinstance(env_id, str) or not env_id:
        raise UsageError(f"env id must be a gymnasium id such as 'CartPole-v1', got {env_id!r}")
    if is_atari(env_id):
        _register_ale()
        kwargs = {"frameskip": 1} if env_id.startswith("ALE/") else {}
        env = _make(env_id, **kwargs)
        try:
            env = gym.wrappers.AtariPreprocessing(env, frame_skip=4, screen_size=84)
        except gym.error.DependencyNotInstalled as e:
            raise UsageError(f"{e} (Atari preprocessing resizes frames with OpenCV)") from None
        return gym.wrappers.FrameStackObservation(env, 4)
    return _make(env_id)


def _make(env_id: str, **kwargs: Any) -> gym.Env:
    try:
        return gym.make(env_id, **kwargs)
    except gym.error.Error as e:
        raise UsageError(f"cannot make environment {env_id!r}: {e}") from None


def make_vector_env(env_id: str, num_envs: int) -> gym.vector.SyncVectorEnv:
    """``num_envs`` copies in one process, auto-resetting in the same step.

    Same-step autoreset hands back the final observation of a finished episode in
    ``info["final_obs"]``, which PPO needs to bootstrap the value of time-limit truncations.
    Seed with ``envs.reset(seed=s)`` (copy ``i`` gets ``s + i``).
    """
    if not isinstance(num_envs, int) or num_envs < 1:
        raise UsageError(f"num_envs must be a positive int, got {num_envs!r}")
    if not hasattr(gym.vector, "AutoresetMode"):
        raise UsageError(f"gymnasium >= 1.1 is needed, found {gym.__version__}")
    fns: list[Callable[[], gym.Env]] = [lambda: make_env(env_id) for _ in range(num_envs)]
    envs = gym.vector.SyncVectorEnv(fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    if not isinstance(envs.single_action_space, gym.spaces.Discrete):
        envs.close()
        raise UsageError(
            f"environment {env_id!r} has action space {envs.single_action_space}; "
            "only discrete action spaces are supported"
        )
    return envs


def model_kwargs(env_id: str) -> tuple[str, dict]:
    """The registered actor-critic and its shape arguments for ``env_id``'s spaces."""
    env = make_env(env_id)
    try:
        obs, act = env.observation_space, env.action_space
    finally:
        env.close()
    if not isinstance(act, gym.spaces.Discrete):
        raise UsageError(
            f"environment {env_id!r} has action space {act}; only discrete actions are supported"
        )
    shape = tuple(obs.shape or ())
    if len(shape) == 1:
        return "us_actor_critic_mlp", {"obs_dim": int(shape[0]), "num_actions": int(act.n)}
    if len(shape) == 3 and shape[1] == shape[2]:
        return "us_actor_critic_cnn", {
            "in_chans": int(shape[0]),
            "input_size": int(shape[1]),
            "num_actions": int(act.n),
        }
    raise UsageError(
        f"environment {env_id!r} has observations of shape {shape}; supported: vectors (MLP) "
        "or square stacked frames (C, H, W) (CNN)"
    )


def to_array(obs: object) -> np.ndarray:
    """Observations as one contiguous array (frame stacks come as arrays already)."""
    return np.ascontiguousarray(np.asarray(obs))
