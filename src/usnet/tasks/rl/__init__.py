"""Universally slimmable reinforcement learning (``task: rl``): US actor-critics trained by PPO
with the sandwich rule. Config in :mod:`.config`, environments in :mod:`.envs`, rollouts, their
minibatches and the PPO loss in :mod:`.ppo`, the trainer's batch source in :mod:`.rollouts`,
evaluation in :mod:`.evaluate`; the task in :mod:`.task` (trained by :mod:`usnet.training`).

This package's ``__init__`` imports nothing, so its config can be read without gymnasium.
"""
