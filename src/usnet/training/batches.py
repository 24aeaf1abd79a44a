"""A data loader as the trainer's batch source (classification, super-resolution)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from ..data.loader import EpochLoader
from ..errors import UsageError


def per_rank(batch_size: int, world_size: int, field: str = "data.batch_size") -> int:
    """Each rank's share of the global ``batch_size``; it must divide evenly."""
    if batch_size % world_size:
        raise UsageError(f"{field} {batch_size} must divide evenly over {world_size} ranks")
    return batch_size // world_size


class LoaderBatches:
    """``steps`` batches of an :class:`~usnet.data.loader.EpochLoader` per epoch (all of them,
    or the first ``steps``): the order depends on ``(seed, epoch)`` only, so a resumed run sees
    the batches an uninterrupted one would."""

    unit = "images"
    generators: Mapping[str, torch.Generator] = {}

    def __init__(self, loader: EpochLoader, steps: int | None = None) -> None:
        self.loader = loader
        self.steps = len(loader) if steps is None else min(len(loader), steps)

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def __iter__(self) -> Iterator[Any]:
        return itertools.islice(iter(self.loader), self.steps)

    def summary(self) -> dict[str, float]:
        return {}

    def close(self) -> None:
        """Nothing to release: the loader's workers end with each epoch's iterator."""
