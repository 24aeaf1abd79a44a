"""A validation split held out of the training images (``data.val_size``).

Searching for the best sub-network must not look at the test set, and the images it measures
must not be ones the weights were trained on: ``data.val_size`` training images, a seeded
random choice (``data.val_seed``), are held out of training. The choice depends only on the
training set's size, ``val_size`` and the seed, all recorded in the checkpoint's config, so
every command that reads the checkpoint finds the same images again.
"""

from __future__ import annotations

from collections.abc import Sized
from typing import Literal, cast

import torch
from torch.utils.data import Dataset, Subset

from ..errors import UsageError

Part = Literal["train", "val"]


def holdout_indices(size: int, val_size: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """``(train, val)``: the indices of ``size`` samples that stay for training and the
    ``val_size`` held out, both sorted; a seeded random choice."""
    if not 0 <= val_size < size:
        raise UsageError(
            f"data.val_size {val_size} must be >= 0 and smaller than the training set ({size} "
            "samples)"
        )
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed))
    val = sorted(order[:val_size].tolist())
    held = set(val)
    return [i for i in range(size) if i not in held], val


def holdout(dataset: Dataset, val_size: int, seed: int, part: Part) -> Dataset:
    """The training images without the held-out ones (``part="train"``) or only those
    (``"val"``); ``val_size == 0`` keeps the whole set for training (and no validation)."""
    if part not in ("train", "val"):
        raise UsageError(f"part must be 'train' or 'val', got {part!r}")
    if val_size == 0:
        if part == "val":
            raise UsageError("data.val_size is 0: this training run held out no validation images")
        return dataset
    train, val = holdout_indices(len(cast(Sized, dataset)), val_size, seed)
    return Subset(dataset, train if part == "train" else val)
