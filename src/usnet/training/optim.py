"""Optimizers with the paper's weight-decay exclusions, and per-iteration learning-rate schedules."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config.sections import OptimConfig, ScheduleConfig


def param_groups(
    model: nn.Module, weight_decay: float, no_weight_decay_depthwise: bool = True
) -> list[dict]:
    """Weight decay on conv and linear weights only (paper: not on BN, biases, depthwise convs)."""
    decay, no_decay = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            depthwise = isinstance(module, nn.Conv2d) and module.groups > 1
            is_weight = name == "weight" and isinstance(module, (nn.Conv2d, nn.Linear))
            if is_weight and not (depthwise and no_weight_decay_depthwise):
                decay.append(p)
            else:
                no_decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def create_optimizer(cfg: OptimConfig, model: nn.Module) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov), Adam or AdamW over :func:`param_groups`."""
    groups = param_groups(model, cfg.weight_decay, cfg.no_weight_decay_depthwise)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    optim = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
    return optim(groups, lr=cfg.lr, betas=(cfg.betas[0], cfg.betas[1]), eps=cfg.eps)


def lr_factor(
    cfg: ScheduleConfig, step: int, steps_per_epoch: int, epochs: int, lr: float = 1.0
) -> float:
    """The learning-rate multiplier at iteration ``step`` (0-based), updated every iteration.

    ``linear`` decays to ``min_lr`` at the last iteration (the paper's: to 0), ``cosine``
    likewise along a half cosine, ``multistep`` multiplies by ``gamma`` at each milestone
    epoch, ``exponential`` by ``gamma`` once per epoch, ``constant`` keeps it. A linear warm-up
    over ``warmup_epochs`` comes first, after which the decay spans the remaining iterations.
    ``lr`` is the peak learning rate (``min_lr`` is a learning rate, not a factor).
    """
    total = max(1, steps_per_epoch * epochs)
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    if step < warmup:
        return (step + 1) / warmup
    epoch = step / steps_per_epoch
    progress = (step - warmup) / max(1, total - warmup)
    if cfg.name in ("linear", "cosine"):
        if cfg.name == "linear":
            decay = max(0.0, 1.0 - progress)
        else:
            decay = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        floor = cfg.min_lr / lr
        return floor + (1.0 - floor) * decay if floor else decay
    if cfg.name == "multistep":
        return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    if cfg.name == "exponential":
        return cfg.gamma ** math.floor(epoch)
    return 1.0


def create_scheduler(
    cfg: ScheduleConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int, epochs: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` stepped once per iteration (its state resumes exactly)."""
    lr = float(optimizer.defaults["lr"])
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(cfg, step, steps_per_epoch, epochs, lr)
    )
