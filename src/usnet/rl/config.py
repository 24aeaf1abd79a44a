"""The RL schema, where :mod:`usnet.rl.evaluate` reads it; defined in :mod:`usnet.tasks.rl.config`."""

from ..tasks.rl.config import RLConfig

__all__ = ["RLConfig"]
