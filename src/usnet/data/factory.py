"""One entry point for the training loop: data sets by name, their shapes, calibration data."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from ..errors import UsageError
from . import cifar as _cifar
from . import fashion_mnist as _fmnist
from .imagefolder import ImageFolder, find_classes
from .loader import EpochLoader, create_loader

_ALIASES = {"imagenet": "imagefolder"}
_SPLITS = {  # accepted split name -> the split each data set has under that meaning
    "fashion_mnist": {"train": "train", "test": "test", "val": "test"},
    "cifar10": {"train": "train", "test": "test", "val": "test"},
    "cifar100": {"train": "train", "test": "test", "val": "test"},
    "imagefolder": {"train": "train", "val": "val", "test": "test"},
}


def _imagefolder(root: str | Path | None = None, **kw: Any) -> ImageFolder:
    if root is None:
        raise UsageError("dataset 'imagefolder' needs root= (the folder holding train/ and val/)")
    return ImageFolder(root, **kw)


_BUILDERS: dict[str, Callable[..., Dataset]] = {
    "fashion_mnist": _fmnist.fashion_mnist,
    "cifar10": lambda **kw: _cifar.cifar("cifar10", **kw),
    "cifar100": lambda **kw: _cifar.cifar("cifar100", **kw),
    "imagefolder": _imagefolder,
}


def list_datasets() -> list[str]:
    """Names accepted by :func:`create_dataset` (``imagenet`` is an alias of ``imagefolder``)."""
    return sorted([*_BUILDERS, *_ALIASES])


def _canonical(name: str) -> str:
    key = _ALIASES.get(name, name)
    if key not in _BUILDERS:
        raise UsageError(f"unknown dataset {name!r}; available: {list_datasets()}")
    return key


def create_dataset(
    name: str,
    root: str | Path | None = None,
    split: str = "train",
    augment: bool = False,
    seed: int = 0,
    **kw: Any,
) -> Dataset:
    """Build a data set by name.

    ``root`` defaults to ``/usr/share/datasets/fashion-mnist`` for Fashion-MNIST and ``data``
    for CIFAR (holding ``cifar-10-batches-bin/`` or ``cifar-100-binary/``); the image folder
    needs it. ``split`` is ``train``, ``test`` or ``val`` (for Fashion-MNIST and CIFAR both of
    the latter mean the test set). ``seed`` drives the augmentation. Extra keywords:
    ``padding`` (Fashion-MNIST 2, CIFAR 4), ``label_mode`` (CIFAR-100 ``fine``/``coarse``),
    ``input_size`` and ``transform`` (image folder).
    """
    key = _canonical(name)
    if split not in _SPLITS[key]:
        raise UsageError(f"split {split!r} is unknown for {name!r}; allowed: {list(_SPLITS[key])}")
    try:
        return _BUILDERS[key](
            root=root, split=_SPLITS[key][split], augment=augment, seed=seed, **kw
        )
    except TypeError as e:
        raise UsageError(f"bad arguments for dataset {name!r}: {e}") from None


def dataset_info(name: str, root: str | Path | None = None, **kw: Any) -> dict[str, int]:
    """``num_classes``, ``in_chans``, ``input_size``: keyword arguments for ``create_model``.

    For the image folder the classes are counted in ``root/train`` when ``root`` is given,
    else ImageNet's 1000 are assumed; ``input_size`` may be passed through.
    """
    key = _canonical(name)
    if key == "fashion_mnist":
        return {"num_classes": 10, "in_chans": 1, "input_size": 28}
    if key in ("cifar10", "cifar100"):
        coarse = kw.get("label_mode", "fine") == "coarse"
        classes = 20 if coarse else _cifar.SPECS[key].num_classes
        return {"num_classes": classes, "in_chans": 3, "input_size": 32}
    classes = len(find_classes(root)) if root is not None else 1000
    return {"num_classes": classes, "in_chans": 3, "input_size": int(kw.get("input_size", 224))}


def calibration_subset(dataset: Dataset, num_samples: int = 2000, seed: int = 0) -> Subset:
    """A fixed, seeded choice of ``num_samples`` samples (all of them if there are fewer)."""
    if num_samples < 1:
        raise UsageError(f"num_samples must be >= 1, got {num_samples}")
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(dataset), generator=g)[:num_samples]  # type: ignore[arg-type]
    return Subset(dataset, order.tolist())


def calibration_loader(
    name: str,
    root: str | Path | None = None,
    num_samples: int = 2000,
    batch_size: int = 200,
    seed: int = 0,
    num_workers: int = 0,
    **kw: Any,
) -> EpochLoader:
    """Batches of ``num_samples`` training images without augmentation, for BN calibration.

    The same images in the same order on every call with the same seed, so calibrated
    statistics are reproducible. (Fewer images if the training split is smaller.)
    """
    dataset = create_dataset(name, root, "train", augment=False, **kw)
    subset = calibration_subset(dataset, num_samples, seed)
    return create_loader(subset, batch_size, shuffle=False, num_workers=num_workers, seed=seed)
