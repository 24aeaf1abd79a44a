"""Classification's model and training batches from its config (the training split, shuffled
and sharded over the ranks); its calibration and validation data are the provider's
(:mod:`.provider`)."""

from __future__ import annotations

from collections.abc import Sized
from typing import cast

import torch
from torch import nn

from ...data import create_dataset, create_loader, dataset_info
from ...data.loader import EpochLoader
from ...errors import UsageError
from ...models.checked import build_from_config
from ...training.batches import per_rank
from .config import TrainConfig


def build_model(cfg: TrainConfig) -> nn.Module:
    """The model of ``cfg``, sized from the data set unless ``model.kwargs`` says otherwise."""
    info = dataset_info(cfg.data.name, cfg.data.root)
    return build_from_config(cfg.model.name, {**info, **cfg.model.kwargs})


def train_loader(
    cfg: TrainConfig, world_size: int, distributed: bool, device: torch.device
) -> EpochLoader:
    """This rank's shuffled share of the training split (``data.batch_size / world_size``)."""
    batch_size = per_rank(cfg.data.batch_size, world_size)
    train_set = create_dataset(
        cfg.data.name, cfg.data.root, "train", augment=cfg.data.augment, seed=cfg.train.seed
    )
    if cfg.data.batch_size > len(cast(Sized, train_set)):
        raise UsageError(
            f"data.batch_size {cfg.data.batch_size} is larger than the training set "
            f"({len(cast(Sized, train_set))} images)"
        )
    return create_loader(
        train_set,
        batch_size,
        shuffle=True,
        num_workers=cfg.data.num_workers,
        seed=cfg.train.seed,
        distributed=distributed,
        drop_last=True,
        pin_memory=device.type == "cuda",
    )
