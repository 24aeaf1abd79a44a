"""Data sets (Fashion-MNIST, CIFAR-10/100, ImageNet folders), tensor transforms and loaders."""

from .cifar import download_cifar, load_cifar, read_cifar_bin
from .factory import (
    calibration_loader,
    calibration_subset,
    create_dataset,
    dataset_info,
    list_datasets,
)
from .fashion_mnist import load_fashion_mnist, read_idx
from .imagefolder import ImageFolder
from .loader import EpochLoader, ResumableSampler, create_loader
from .memory import InMemoryImageDataset
from .transforms import ImageNetEval, ImageNetTrain

__all__ = [
    "EpochLoader",
    "ImageFolder",
    "ImageNetEval",
    "ImageNetTrain",
    "InMemoryImageDataset",
    "ResumableSampler",
    "calibration_loader",
    "calibration_subset",
    "create_dataset",
    "create_loader",
    "dataset_info",
    "download_cifar",
    "list_datasets",
    "load_cifar",
    "load_fashion_mnist",
    "read_cifar_bin",
    "read_idx",
]
