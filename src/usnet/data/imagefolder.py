"""The ImageNet folder layout, ``root/{train,val}/<class>/<image>``, decoded with Pillow.

One image per ``__getitem__`` so DataLoader workers decode in parallel. The random transform
of sample ``i`` in epoch ``e`` uses a generator seeded from ``(seed, e, i)`` only.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from ..errors import UsageError
from .images import open_image
from .seeding import sample_generator
from .transforms import ImageNetEval, ImageNetTrain

EXTENSIONS = (".jpeg", ".jpg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
LAYOUT = "root/train/<class>/*.JPEG and root/val/<class>/*.JPEG (one sub-folder per class)"
HOW_TO_GET = (
    "for ImageNet, extract ILSVRC2012_img_train.tar per class and sort the validation images "
    "into class folders (e.g. with the widely used valprep.sh)"
)
SPLIT_DIRS = {"train": ("train",), "val": ("val", "test"), "test": ("test", "val")}


def split_dir(root: str | Path, split: str) -> Path:
    """The folder of ``split``: ``train``, or ``val``/``test`` (either name on disk)."""
    if split not in SPLIT_DIRS:
        raise UsageError(f"image folder split {split!r} is unknown; allowed: {list(SPLIT_DIRS)}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder root {root} does not exist; expected {LAYOUT}")
    for name in SPLIT_DIRS[split]:
        if (root / name).is_dir():
            return root / name
    raise FileNotFoundError(
        f"no {' or '.join(SPLIT_DIRS[split])} folder in {root}; expected {LAYOUT}; {HOW_TO_GET}"
    )


def find_classes(root: str | Path) -> list[str]:
    """Sorted class names: the sub-folders of ``root/train`` (else of ``root/val``)."""
    root = Path(root)
    base = root / "train" if (root / "train").is_dir() else split_dir(root, "val")
    classes = sorted(e.name for e in os.scandir(base) if e.is_dir())
    if not classes:
        raise FileNotFoundError(f"{base} has no class sub-folders; expected {LAYOUT}")
    return classes


class ImageFolder(Dataset):
    """Images under ``root/<split>/<class>/``; labels index the sorted training classes.

    ``augment`` selects the authors' training augmentation, otherwise the evaluation transform
    (resize shorter side to ``input_size / 0.875``, centre crop). Pass ``transform`` to
    replace either; it is called as ``transform(pil_image, generator)``.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        augment: bool = False,
        input_size: int = 224,
        seed: int = 0,
        transform: Callable[[Image.Image, torch.Generator], torch.Tensor] | None = None,
    ) -> None:
        folder = split_dir(root, split)
        self.root, self.folder = Path(root), folder
        self.classes = find_classes(root)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.samples: list[tuple[str, int]] = []
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            if not entry.is_dir():
                continue
            if entry.name not in self.class_to_idx:
                raise UsageError(
                    f"{entry.path}: class {entry.name!r} is not among the {len(self.classes)} "
                    f"training classes of {self.root / 'train'}"
                )
            label = self.class_to_idx[entry.name]
            names = sorted(
                e.name for e in os.scandir(entry.path)
                if e.is_file() and e.name.lower().endswith(EXTENSIONS)
            )  # fmt: skip
            self.samples.extend((os.path.join(entry.path, n), label) for n in names)
        if not self.samples:
            raise FileNotFoundError(
                f"no images ({', '.join(EXTENSIONS)}) in class folders of {folder}; "
                f"expected {LAYOUT}"
            )
        if transform is None:
            transform = ImageNetTrain(input_size) if augment else ImageNetEval(input_size)
        self.transform, self.augment, self.seed = transform, bool(augment), int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation of this epoch."""
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        img = open_image(path)  # bombs, truncated and corrupt files: one line naming the file
        x = self.transform(img, sample_generator(self.seed, self.epoch, index))
        return x, label
