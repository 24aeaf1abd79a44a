"""RL environments, where :mod:`usnet.rl.evaluate` reads them; defined in :mod:`usnet.tasks.rl.envs`."""

from ..tasks.rl.envs import make_env, make_vector_env

__all__ = ["make_env", "make_vector_env"]
