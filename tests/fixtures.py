"""Generated data sets for the tests: learnable, tiny, written in the real on-disk formats."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def write_fashion_mnist(root: Path, n_train: int = 256, n_test: int = 128, seed: int = 0) -> Path:
    """A Fashion-MNIST-format folder whose 10 classes are noisy gratings (one orientation and
    frequency per class), so even a small conv net with global pooling can learn them."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:28, 0:28]
    angles = np.arange(10) * np.pi / 5
    freqs = np.where(np.arange(10) < 5, 0.5, 1.1)
    patterns = 127.5 + 110 * np.sin(
        freqs[:, None, None] * (np.cos(angles)[:, None, None] * xx + np.sin(angles)[:, None, None] * yy)
    )
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        noise = rng.normal(0, 60, size=(n, 28, 28))
        images = np.clip(patterns[labels] + noise, 0, 255)
        _write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root
