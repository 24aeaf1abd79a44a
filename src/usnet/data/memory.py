"""A whole split held as one uint8 tensor: the fast path for small images (Fashion-MNIST, CIFAR).

Indexing a batch is one gather; normalisation and the optional crop/flip run batched on it.
The loader asks for whole batches through ``__getitems__`` (see :mod:`usnet.data.loader`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from ..errors import UsageError
from .seeding import sample_keys, uniforms
from .transforms import normalize_uint8, random_crop_flip


class InMemoryImageDataset(Dataset):
    """uint8 images ``(N, C, H, W)`` and int64 labels; yields normalised float32 images.

    With ``augment``, each image is padded by ``padding`` zeros, randomly cropped back and
    flipped with probability 1/2. The randomness is a function of ``(seed, epoch, index)``
    only; call :meth:`set_epoch` (the loader's ``set_epoch`` does) to change it per epoch.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        mean: Sequence[float],
        std: Sequence[float],
        augment: bool = False,
        padding: int = 2,
        seed: int = 0,
        classes: Sequence[str] | None = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise UsageError(
                f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}"
            )
        if labels.shape != (images.shape[0],):
            raise UsageError(f"{images.shape[0]} images but labels of shape {tuple(labels.shape)}")
        if len(mean) != images.shape[1] or len(std) != images.shape[1]:
            raise UsageError(f"mean/std need {images.shape[1]} values, got {mean} / {std}")
        if padding < 0:
            raise UsageError(f"padding must be >= 0, got {padding}")
        self.images = images.contiguous()
        self.labels = labels.to(torch.int64)
        self.mean, self.std = tuple(mean), tuple(std)
        self.augment, self.padding, self.seed = bool(augment), int(padding), int(seed)
        self.classes = list(classes) if classes is not None else None
        self.epoch = 0

    def __len__(self) -> int:
        return self.images.shape[0]

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation of this epoch (no effect without ``augment``)."""
        self.epoch = int(epoch)

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """A whole batch ``(images float32 (B, C, H, W), labels int64 (B,))`` at once."""
        idx = torch.as_tensor(indices, dtype=torch.int64)
        x = self.images[idx]
        if self.augment:
            u = uniforms(sample_keys(self.seed, self.epoch, idx.numpy()), 3)
            x = random_crop_flip(x, self.padding, u)
        return normalize_uint8(x, self.mean, self.std), self.labels[idx]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        x, y = self.__getitems__([index % len(self)])
        return x[0], int(y[0])
