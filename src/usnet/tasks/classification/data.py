"""Classification's model and data from its config: the training loader (sharded over ranks),
the calibration images and the test split."""

from __future__ import annotations

from collections.abc import Iterable, Sized
from typing import cast

import torch
from torch import nn

from ...data import calibration_loader, create_dataset, create_loader, dataset_info
from ...data.loader import EpochLoader
from ...data.split import holdout
from ...models.checked import build_from_config
from .config import TrainConfig


def build_model(cfg: TrainConfig) -> nn.Module:
    """The model of ``cfg``, sized from the data set unless ``model.kwargs`` says otherwise."""
    info = dataset_info(cfg.data.name, cfg.data.root)
    return build_from_config(cfg.model.name, {**info, **cfg.model.kwargs})


def train_loader(
    cfg: TrainConfig, world_size: int, distributed: bool, device: torch.device
) -> EpochLoader:
    """This rank's shuffled share of the training split (``data.batch_size / world_size``)."""
    train_set = create_dataset(
        cfg.data.name, cfg.data.root, "train", augment=cfg.data.augment, seed=cfg.train.seed
    )
    train_set = holdout(train_set, cfg.data.val_size, cfg.data.val_seed, "train")
    return create_loader(
        train_set,
        cfg.data.batch_size // world_size,
        shuffle=True,
        num_workers=cfg.data.num_workers,
        seed=cfg.train.seed,
        distributed=distributed,
        drop_last=True,
        pin_memory=device.type == "cuda",
    )


def calibration_data(cfg: TrainConfig) -> Iterable:
    """The ``calibrate.num_samples`` training images BN statistics are computed from."""
    return calibration_loader(
        cfg.data.name,
        cfg.data.root,
        cfg.calibrate.num_samples,
        cfg.calibrate.batch_size,
        seed=cfg.train.seed,
        val_size=cfg.data.val_size,
        val_seed=cfg.data.val_seed,
    )


def test_loader(cfg: TrainConfig, max_samples: int | None = None) -> EpochLoader:
    """The test split in order (the first ``max_samples`` images when given)."""
    val = create_dataset(cfg.data.name, cfg.data.root, "test")
    if max_samples is not None and max_samples < len(cast(Sized, val)):
        val = torch.utils.data.Subset(val, range(max_samples))
    return create_loader(
        val, cfg.data.val_batch_size, shuffle=False, num_workers=cfg.data.num_workers
    )
