"""Fashion-MNIST from its IDX gzip files (Debian's ``dataset-fashion-mnist`` by default)."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import UsageError
from .memory import InMemoryImageDataset

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# Per-pixel statistics of the 60,000 training images in [0, 1].
MEAN = (0.2860,)
STD = (0.3530,)
CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
HOW_TO_GET = (
    "install it with `apt-get install dataset-fashion-mnist` (files land in "
    f"{DEFAULT_ROOT}) or download the four *-ubyte.gz files from "
    "https://github.com/zalandoresearch/fashion-mnist"
)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file of unsigned bytes (gzip or plain) into a uint8 array of its shape."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (EOFError, OSError, zlib.error) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise UsageError(f"{path}: not a readable (gzip) IDX file ({e}); {HOW_TO_GET}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise UsageError(f"{path}: bad IDX magic number; expected 0x0000 0x08 <ndim>")
    if raw[2] != 0x08:
        raise UsageError(f"{path}: IDX element type 0x{raw[2]:02x}, expected 0x08 (unsigned byte)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UsageError(f"{path}: truncated IDX header ({len(raw)} bytes, need {header})")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header != expected:
        raise UsageError(
            f"{path}: IDX file of shape {shape} needs {expected} data bytes, has {len(raw) - header}"
            f" (truncated or corrupt); {HOW_TO_GET}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(
        f"Fashion-MNIST file {stem}.gz not found in {root}; expected "
        f"{', '.join(f + '.gz' for pair in FILES.values() for f in pair)}; {HOW_TO_GET}"
    )


def load_fashion_mnist(root: str | Path | None, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images ``(N, 1, 28, 28)`` and int64 labels ``(N,)`` of split ``train`` or ``test``."""
    if split not in FILES:
        raise UsageError(f"Fashion-MNIST split {split!r} is unknown; allowed: {list(FILES)}")
    root = Path(root if root is not None else DEFAULT_ROOT)
    if not root.is_dir():
        raise FileNotFoundError(f"Fashion-MNIST folder {root} does not exist; {HOW_TO_GET}")
    img_path, lbl_path = (_find(root, stem) for stem in FILES[split])
    images, labels = read_idx(img_path), read_idx(lbl_path)
    if images.ndim != 3:
        raise UsageError(f"{img_path}: expected images (N, H, W), got shape {images.shape}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise UsageError(
            f"{lbl_path}: {labels.shape} labels for {images.shape[0]} images in {img_path}"
        )
    if labels.size and labels.max() >= len(CLASSES):
        raise UsageError(f"{lbl_path}: label {labels.max()} >= {len(CLASSES)} classes")
    x = torch.from_numpy(images.copy()).unsqueeze(1)  # copy: frombuffer views are read-only
    return x, torch.from_numpy(labels.astype(np.int64))


def fashion_mnist(
    root: str | Path | None = None,
    split: str = "train",
    augment: bool = False,
    padding: int = 2,
    seed: int = 0,
) -> InMemoryImageDataset:
    """Fashion-MNIST (1x28x28, 10 classes); augmentation = 2-px pad, random crop, flip."""
    images, labels = load_fashion_mnist(root, split)
    return InMemoryImageDataset(
        images, labels, MEAN, STD, augment=augment, padding=padding, seed=seed, classes=CLASSES
    )
