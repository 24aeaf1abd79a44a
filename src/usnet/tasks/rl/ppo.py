"""PPO with the sandwich rule: rollouts, their minibatches and PPO's loss per width.

Rollouts are collected at one width (by default the largest: the teacher, and the best policy
the agent has; docs/rl.md says why). Every minibatch then trains the widths the sampling rule
picks (``[w_max, w_min]`` + ``n - 2`` random widths), largest first; the gradients of all widths
accumulate and one optimizer step follows (the one trainer's step, :mod:`usnet.training`). Each width's PPO loss uses the behaviour policy's
log-probabilities as the trust-region anchor, so for narrow widths the ratio is the true
importance weight of the collected actions. With inplace distillation the narrow widths also learn the
largest width's detached action distribution (KL) and value (MSE), the RL form of inplace
distillation.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import UsageError
from ...nn import width as at_width
from .config import PPOConfig, RLTraining


@dataclass
class Rollout:
    """``T`` steps of ``N`` environments, with advantages and returns once computed."""

    obs: Tensor  # (T, N, *obs_shape)
    actions: Tensor  # (T, N) int64
    logprobs: Tensor  # (T, N) behaviour policy
    values: Tensor  # (T, N)
    rewards: Tensor  # (T, N) learning rewards (clipped, truncations bootstrapped)
    dones: Tensor  # (T, N) 1.0 where the episode ended at this step
    last_value: Tensor  # (N,) value of the observation after the last step
    advantages: Tensor | None = None
    returns: Tensor | None = None

    def compute_gae(self, gamma: float, lam: float) -> None:
        """Generalised advantage estimation (Schulman et al. 2016)."""
        adv = torch.zeros_like(self.rewards)
        gae = torch.zeros_like(self.last_value)
        for t in reversed(range(self.rewards.shape[0])):
            next_value = self.last_value if t == self.rewards.shape[0] - 1 else self.values[t + 1]
            live = 1.0 - self.dones[t]
            delta = self.rewards[t] + gamma * next_value * live - self.values[t]
            gae = delta + gamma * lam * live * gae
            adv[t] = gae
        self.advantages, self.returns = adv, adv + self.values

    def flat(self) -> dict[str, Tensor]:
        """Every step as one batch row (call :meth:`compute_gae` first)."""
        if self.advantages is None or self.returns is None:
            raise RuntimeError("compute_gae() must run before flat()")
        n = self.actions.numel()
        return {
            "obs": self.obs.reshape(n, *self.obs.shape[2:]),
            "actions": self.actions.reshape(n),
            "logprobs": self.logprobs.reshape(n),
            "values": self.values.reshape(n),
            "advantages": self.advantages.reshape(n),
            "returns": self.returns.reshape(n),
        }


def _obs_tensor(obs: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(obs))


def _device(model: nn.Module) -> torch.device:
    """Where the model's weights are; rollouts and RNG stay on the CPU, batches move there."""
    return next(model.parameters()).device


class Collector:
    """Steps a vector environment with the model; keeps the current observations and episodes.

    Actions are drawn with its own generator (``generator``, else one seeded ``seed``), so a run
    is reproducible whatever else uses the global RNG. ``episodes`` collects ``(return, length)`` of every finished episode (raw rewards).
    """

    def __init__(
        self, envs: gym.vector.VectorEnv, seed: int, generator: torch.Generator | None = None
    ) -> None:
        self.envs = envs
        obs, _ = envs.reset(seed=seed)
        self.obs = _obs_tensor(obs)
        self.generator = generator or torch.Generator().manual_seed(seed)
        self._ret = np.zeros(envs.num_envs)
        self._len = np.zeros(envs.num_envs, dtype=np.int64)
        self.episodes: list[tuple[float, int]] = []

    @torch.no_grad()
    def collect(
        self,
        model: nn.Module,
        steps: int,
        width: float,
        gamma: float,
        reward_clip: float | None = None,
        reward_scale: float = 1.0,
    ) -> Rollout:
        """``steps`` steps of every env at ``width``; learning rewards are clipped, then scaled.

        Scaling keeps values near 1 (Acrobot's -1 per step gives values near -100, whose
        gradients would otherwise dominate the clipped gradient norm).
        """
        n = self.envs.num_envs
        obs_buf = torch.zeros((steps, n, *self.obs.shape[1:]), dtype=self.obs.dtype)
        act = torch.zeros((steps, n), dtype=torch.int64)
        logp, val, rew, done = (torch.zeros((steps, n)) for _ in range(4))
        device = _device(model)
        was_training = model.training
        model.eval()
        try:
            with at_width(model, width):
                for t in range(steps):
                    logits, value = model(self.obs.to(device))
                    logps = F.log_softmax(logits.float(), dim=-1).cpu()
                    value = value.float().cpu()
                    a = torch.multinomial(logps.exp(), 1, generator=self.generator).squeeze(1)
                    obs_buf[t], act[t], val[t] = self.obs, a, value
                    logp[t] = logps.gather(1, a[:, None]).squeeze(1)
                    next_obs, r, term, trunc, info = self.envs.step(a.numpy())
                    r = np.asarray(r, dtype=np.float64)
                    self._track(r, term | trunc)
                    learn = np.clip(r, -reward_clip, reward_clip) if reward_clip else r.copy()
                    learn *= reward_scale
                    learn += self._bootstrap(model, term, trunc, info, gamma)
                    rew[t] = torch.from_numpy(learn).float()
                    done[t] = torch.from_numpy((term | trunc).astype(np.float32))
                    self.obs = _obs_tensor(next_obs)
                last_value = model(self.obs.to(device))[1].float().cpu()
        finally:
            model.train(was_training)
        return Rollout(obs_buf, act, logp, val, rew, done, last_value)

    def _track(self, rewards: np.ndarray, ended: np.ndarray) -> None:
        self._ret += rewards
        self._len += 1
        for i in np.flatnonzero(ended):
            self.episodes.append((float(self._ret[i]), int(self._len[i])))
            self._ret[i], self._len[i] = 0.0, 0

    @staticmethod
    @torch.no_grad()
    def _bootstrap(
        model: nn.Module, term: np.ndarray, trunc: np.ndarray, info: dict, gamma: float
    ) -> np.ndarray:
        """``gamma * V(final obs)`` for episodes cut by a time limit (not a real terminal state).

        Without it the value of a state would depend on the hidden step counter, and CartPole's
        500-step limit would teach the critic that balancing well ends in a fall.
        """
        extra = np.zeros(len(term))
        cut = np.flatnonzero(trunc & ~term)
        if len(cut):
            final = np.stack([np.asarray(info["final_obs"][i]) for i in cut])
            value = model(_obs_tensor(final).to(_device(model)))[1]
            extra[cut] = gamma * value.float().cpu().numpy()
        return extra


def width_losses(
    logits: Tensor,
    value: Tensor,
    batch: dict[str, Tensor],
    cfg: PPOConfig,
    teacher: tuple[Tensor, Tensor] | None = None,
    train: RLTraining | None = None,
) -> dict[str, Tensor]:
    """The loss of one width on a minibatch, with its parts (``loss`` is what is minimised).

    ``teacher`` is the largest width's ``(log-probs, value)``, detached; when given (narrow widths
    with distillation on) the KL to its policy and the MSE to its value are added.
    """
    logps = F.log_softmax(logits.float(), dim=-1)
    new_logp = logps.gather(1, batch["actions"][:, None]).squeeze(1)
    ratio = (new_logp - batch["logprobs"]).exp()
    adv = batch["advantages"]
    policy = torch.max(-adv * ratio, -adv * ratio.clamp(1 - cfg.clip, 1 + cfg.clip)).mean()
    value_loss = 0.5 * (value.float() - batch["returns"]).pow(2).mean()
    entropy = -(logps.exp() * logps).sum(-1).mean()
    loss = policy + cfg.vf_coef * value_loss - cfg.ent_coef * entropy
    out = {"policy": policy, "value": value_loss, "entropy": entropy}
    if teacher is not None:
        if train is None:
            raise UsageError("distillation needs the train config (its coefficients)")
        t_logps, t_value = teacher
        kl = (t_logps.exp() * (t_logps - logps)).sum(-1).mean()
        value_distill = 0.5 * (value.float() - t_value).pow(2).mean()
        loss = loss + train.distill_policy_coef * kl + train.distill_value_coef * value_distill
        out.update(kl=kl, value_distill=value_distill)
    out["loss"] = loss
    return out


class PPOLoss:
    """PPO's loss per width; inplace distillation adds the KL to the largest width's detached
    policy and the MSE to its value (a :class:`~usnet.training.step.SandwichLoss`)."""

    def __init__(self, cfg: PPOConfig, train: RLTraining) -> None:
        self.cfg, self.train = cfg, train

    def loss(self, outputs: tuple[Tensor, Tensor], batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return width_losses(*outputs, batch, self.cfg)

    def distill_loss(
        self,
        outputs: tuple[Tensor, Tensor],
        teacher: tuple[Tensor, Tensor],
        batch: dict[str, Tensor],
    ) -> dict[str, Tensor]:
        logits, value = teacher
        target = (F.log_softmax(logits.float(), dim=-1), value.float())
        return width_losses(*outputs, batch, self.cfg, target, self.train)


def minibatches(
    rollout: Rollout, cfg: PPOConfig, generator: torch.Generator, device: torch.device
) -> Iterator[tuple[Tensor, dict[str, Tensor]]]:
    """The minibatches PPO learns from one rollout: ``epochs`` passes over it, each shuffled
    into ``minibatches`` parts, as ``(observations, batch)`` pairs for the sandwich step.

    Each minibatch's advantages are normalised (zero mean, unit deviation). The shuffle draws
    from ``generator`` lazily, one pass at a time, so a caller that draws each step's widths
    from the same generator keeps one reproducible sequence.
    """
    rollout.compute_gae(cfg.gamma, cfg.gae_lambda)
    data = {key: v.to(device) for key, v in rollout.flat().items()}
    n = data["actions"].shape[0]
    size = n // cfg.minibatches
    for _ in range(cfg.epochs):
        perm = torch.randperm(n, generator=generator)
        for k in range(cfg.minibatches):
            idx = perm[k * size : (k + 1) * size].to(device)
            batch = {key: v[idx] for key, v in data.items()}
            adv = batch["advantages"]
            batch["advantages"] = (adv - adv.mean()) / (adv.std() + 1e-8)
            yield batch["obs"], batch
