"""Counter-based random numbers, so augmentation is a pure function of (seed, epoch, index).

A sample's crop and flip then do not depend on the batch it lands in, the number of loader
workers, or whether the run was interrupted and resumed: epoch ``e`` of a resumed run sees
exactly the pixels of epoch ``e`` of an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MASK63 = (1 << 63) - 1


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser: a fast bijective mix of 64-bit integers (wraps by design)."""
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def sample_keys(seed: int, epoch: int, indices: Sequence[int] | np.ndarray) -> np.ndarray:
    """One 64-bit key per sample index, distinct across seeds and epochs."""
    base = _splitmix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))
    base = _splitmix64(base ^ np.uint64(epoch & 0xFFFFFFFFFFFFFFFF))
    idx = np.asarray(indices, dtype=np.int64).astype(np.uint64)
    return _splitmix64(base ^ idx)


def uniforms(keys: np.ndarray, count: int) -> torch.Tensor:
    """``count`` independent uniforms in [0, 1) per key, as a float64 tensor (len(keys), count)."""
    streams = np.arange(1, count + 1, dtype=np.uint64) * _GOLDEN
    bits = _splitmix64(keys[:, None] ^ streams[None, :]) >> np.uint64(11)
    return torch.from_numpy(bits.astype(np.float64) * (1.0 / (1 << 53)))


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A torch generator private to one sample of one epoch (for per-image transforms)."""
    key = int(sample_keys(seed, epoch, [index])[0]) & _MASK63
    return torch.Generator().manual_seed(key)
