"""Super-resolution's model and data from its config: training patches (sharded over ranks) and
whole test images."""

from __future__ import annotations

import functools

from torch import nn

from ...data.loader import EpochLoader, create_loader
from ...data.sr import EMBEDDED_TEST, EMBEDDED_TRAIN, SRPairs, SRPatches, SRTestSet, load_pairs
from ...models.checked import build_from_config
from ...training.batches import per_rank
from .config import SRConfig


def build_model(cfg: SRConfig) -> nn.Module:
    return build_from_config(cfg.model.name, {"scale": cfg.scale, **cfg.model.kwargs})


def train_loader(cfg: SRConfig, world_size: int, distributed: bool) -> EpochLoader:
    """``train.steps_per_epoch`` batches of patches per epoch; this rank's share of each."""
    pairs = load_pairs(cfg.data.train_dir, EMBEDDED_TRAIN, cfg.scale)
    length = cfg.train.steps_per_epoch * cfg.data.batch_size
    patches = SRPatches(pairs, cfg.data.patch_size, length, cfg.train.seed, cfg.data.augment)
    return create_loader(
        patches,
        per_rank(cfg.data.batch_size, world_size),
        shuffle=False,
        num_workers=cfg.data.num_workers,
        seed=cfg.train.seed,
        distributed=distributed,
        drop_last=True,
    )


def test_set(cfg: SRConfig, test_dir: str | None = None) -> SRTestSet:
    """The test images (``data.test_dir`` unless ``test_dir`` is given), read once per run."""
    return SRTestSet(_test_pairs(test_dir or cfg.data.test_dir, cfg.scale))


@functools.lru_cache(maxsize=2)
def _test_pairs(test_dir: str | None, scale: int) -> SRPairs:
    return load_pairs(test_dir, EMBEDDED_TEST, scale)
