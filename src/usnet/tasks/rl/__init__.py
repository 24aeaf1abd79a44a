"""Universally slimmable reinforcement learning (``task: rl``): US actor-critics trained by PPO
with the sandwich rule. Config in :mod:`.config`, environments in :mod:`.envs`, the PPO loss
and update in :mod:`.ppo`, the rollout loop in :mod:`.train`; the task in :mod:`.task`.

This package's ``__init__`` imports nothing, so its config can be read without gymnasium.
"""
