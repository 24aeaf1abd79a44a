"""US actor-critics for reinforcement learning: a slimmable trunk with policy and value heads.

No batch norm (the paper's RL networks have none), so every width runs as trained and needs no
calibration. Width range [0.25, 1.0]. Not slimmed: the observation entering the trunk, the policy
head's action logits and the value head's single output; the heads' inputs slim with the trunk.

- ``us_actor_critic_mlp``: vector observations (classic control). Separate actor and critic MLPs
  (tanh, as in the usual PPO recipe for these tasks) or, with ``shared=True``, one trunk.
- ``us_actor_critic_cnn``: image observations, the Nature-DQN trunk for 84x84 Atari frames
  (4 stacked grey frames, uint8, scaled to [0, 1] inside the model), shared by both heads.

``forward(obs)`` returns ``(logits, value)``; ``value`` has shape ``(N,)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import UsageError
from ..nn import GroupRef, USConv2d, USLinear, make_divisible
from .base import USModel
from .registry import register_model


def _orthogonal_init(model: nn.Module, policy: nn.Linear, value: nn.Linear) -> None:
    """The usual PPO init: orthogonal weights (gain sqrt 2), a near-uniform initial policy.

    A row prefix of an orthogonal matrix keeps orthonormal rows, so narrow widths start as
    well-scaled networks too.
    """
    for m in model.modules():
        if isinstance(m, nn.Linear | nn.Conv2d):
            nn.init.orthogonal_(m.weight, math.sqrt(2.0))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    nn.init.orthogonal_(policy.weight, 0.01)
    nn.init.orthogonal_(value.weight, 1.0)


class USActorCritic(USModel):
    """Common part: heads on a slimmable feature group, and the env the agent was made for.

    ``env_id`` is metadata only (the model never touches the environment): it travels with the
    checkpoint so that evaluation can rebuild the right environment.
    """

    task = "rl"

    def __init__(
        self,
        input_size: tuple[int, int, int],
        num_actions: int,
        width_min: float,
        width_max: float,
        env_id: str | None,
    ) -> None:
        if not isinstance(num_actions, int) or num_actions < 1:
            raise UsageError(f"num_actions must be a positive int, got {num_actions!r}")
        super().__init__(width_min, width_max, input_size)
        self.num_actions = num_actions
        self.env_id = env_id

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


class USActorCriticMLP(USActorCritic):
    """MLP actor-critic for vector observations of ``obs_dim`` floats.

    ``input_size`` is ``(obs_dim, 1, 1)``: the models share the ``(C, H, W)`` convention, so a
    profiler feeding ``zeros(1, *input_size)`` works; the trunk flattens its input, and plain
    ``(N, obs_dim)`` batches work too.
    """

    def __init__(
        self,
        obs_dim: int,
        num_actions: int,
        hidden: Sequence[int] = (64, 64),
        shared: bool = False,
        width_min: float = 0.25,
        width_max: float = 1.0,
        env_id: str | None = None,
    ) -> None:
        if not isinstance(obs_dim, int) or obs_dim < 1:
            raise UsageError(f"obs_dim must be a positive int, got {obs_dim!r}")
        if not hidden or any(not isinstance(h, int) or h < 1 for h in hidden):
            raise UsageError(f"hidden must be a non-empty list of positive ints, got {hidden!r}")
        super().__init__((obs_dim, 1, 1), num_actions, width_min, width_max, env_id)
        self.shared = bool(shared)
        self.actor, feat_actor = self._mlp("actor" if not shared else "trunk", obs_dim, hidden)
        self.critic: nn.Sequential | None = None
        feat_critic = feat_actor
        if not shared:
            self.critic, feat_critic = self._mlp("critic", obs_dim, hidden)
        self.policy = USLinear(feat_actor, num_actions)
        self.value = USLinear(feat_critic, 1)
        _orthogonal_init(self, self.policy, self.value)
        self.finish()

    def _mlp(
        self, name: str, obs_dim: int, hidden: Sequence[int]
    ) -> tuple[nn.Sequential, GroupRef]:
        """Linear-tanh layers of ``hidden`` features (times width_max), and their output group."""
        layers: list[nn.Module] = []
        inp: int | GroupRef = obs_dim
        width_max = self.width_space.width_max
        for i, h in enumerate(hidden):
            out = self.width_space.group(f"{name}.fc{i + 1}", make_divisible(h * width_max))
            layers += [USLinear(inp, out), nn.Tanh()]
            inp = out
        assert isinstance(inp, GroupRef)  # hidden is not empty
        return nn.Sequential(*layers), inp

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        x = obs.flatten(1).float()
        h = self.actor(x)
        v = h if self.critic is None else self.critic(x)
        return self.policy(h), self.value(v).squeeze(-1)


class USActorCriticCNN(USActorCritic):
    """Nature-DQN actor-critic (Mnih et al. 2015; the PPO Atari network) for ``(C, H, W)`` frames.

    Conv 32x8x8/4, 64x4x4/2, 64x3x3/1, then a 512-unit layer; ReLU; shared by both heads. The
    flattened conv features are channel-major, so a width's features are the leading
    ``active(conv3) * H' * W'`` entries: the ``flat`` group has ratio ``H' * W'`` and so rounds
    exactly like ``conv3`` at every uniform width (a non-uniform width must give both the same
    value; the forward pass checks it).
    """

    def __init__(
        self,
        num_actions: int,
        in_chans: int = 4,
        input_size: int = 84,
        width_min: float = 0.25,
        width_max: float = 1.0,
        env_id: str | None = None,
    ) -> None:
        super().__init__(
            (in_chans, input_size, input_size), num_actions, width_min, width_max, env_id
        )
        space = self.width_space
        c1 = space.group("conv1", make_divisible(32 * width_max))
        c2 = space.group("conv2", make_divisible(64 * width_max))
        c3 = space.group("conv3", make_divisible(64 * width_max))
        self.trunk = nn.Sequential(
            USConv2d(in_chans, c1, 8, 4, padding=0, bias=True),
            nn.ReLU(inplace=True),
            USConv2d(c1, c2, 4, 2, padding=0, bias=True),
            nn.ReLU(inplace=True),
            USConv2d(c2, c3, 3, 1, padding=0, bias=True),
            nn.ReLU(inplace=True),
        )
        with torch.no_grad():
            spatial = int(self.trunk(torch.zeros(1, *self.input_size))[0, 0].numel())
        if spatial < 1:
            raise UsageError(f"input_size {input_size} is too small for the Nature-DQN trunk")
        self._conv3, self.spatial = c3, spatial
        self._flat = space.group("flat", c3.full * spatial, ratio=spatial)
        hid = space.group("fc", make_divisible(512 * width_max))
        self.fc = nn.Sequential(USLinear(self._flat, hid), nn.ReLU(inplace=True))
        self.policy = USLinear(hid, num_actions)
        self.value = USLinear(hid, 1)
        _orthogonal_init(self, self.policy, self.value)
        self.finish()

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        if self._flat.active != self._conv3.active * self.spatial:
            raise UsageError(
                "width config gives channel groups 'flat' and 'conv3' different widths; "
                "they are one dimension (the flattened conv3 features): give them the same value"
            )
        x = obs.float() / 255.0 if obs.dtype == torch.uint8 else obs.float()
        h = self.fc(self.trunk(x).flatten(1))
        return self.policy(h), self.value(h).squeeze(-1)


@register_model
def us_actor_critic_mlp(**kwargs: Any) -> USActorCriticMLP:
    """MLP actor-critic for vector observations (CartPole: obs_dim=4, num_actions=2)."""
    return USActorCriticMLP(**kwargs)


@register_model
def us_actor_critic_cnn(**kwargs: Any) -> USActorCriticCNN:
    """Nature-DQN actor-critic for 84x84x4 Atari frames."""
    return USActorCriticCNN(**kwargs)
