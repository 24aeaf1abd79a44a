"""Exact per-channel moments of batch-norm inputs, pooled over batches in float64.

A batch's moments come from one or two fast reads of it (torch's reductions and BN statistics
kernel, chosen by memory layout and checked for precision); batches are then pooled exactly, so
statistics do not depend on how the samples were batched.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

#: Channels-last batches go to the BN statistics kernel in chunks of at most this many positions:
#: it sums them in float32 one after another (1e-4 relative error on a 32x112x112 batch, 1e-6 so).
_CHUNK_ROWS = 1 << 14
#: Plane sums of x and x^2 lose ~5e-8 relative precision times a plane's (mean^2 + var) / var;
#: above this ratio a batch takes the slower, double-accumulating kernel instead.
_PLANE_CONDITION = 20.0


def pooled(parts: Sequence[tuple[int, Tensor, Tensor]]) -> tuple[int, Tensor, Tensor]:
    """Count, mean and sum of squared deviations of the union of parts given as such (float64):
    ``m2 = sum_i m2_i + n_i (mean_i - mean)^2``, exact whatever the parts' sizes."""
    if len(parts) == 1:
        return parts[0]
    n = torch.tensor([p[0] for p in parts], dtype=torch.float64, device=parts[0][1].device)
    means = torch.stack([p[1] for p in parts])
    mean = (n[:, None] * means).sum(0) / n.sum()
    m2 = torch.stack([p[2] for p in parts]).sum(0) + (n[:, None] * (means - mean).square()).sum(0)
    return int(n.sum().item()), mean, m2


def batch_moments(x: Tensor) -> tuple[int, Tensor, Tensor]:
    """Count, mean and sum of squared deviations per channel (dim 1) of ``x``, in float64."""
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    if x.is_contiguous() and x.dim() > 2:
        found = _plane_moments(x)
        if found is not None:
            return found
    # torch's BN statistics kernel: double accumulation on contiguous tensors (4x slower than
    # plane sums there), float32 on channels-last ones (fast, but sums row after row: chunks)
    c = x.shape[1]
    rows = x.numel() // c // max(len(x), 1)  # positions per sample
    step = len(x) if x.is_contiguous() else max(1, _CHUNK_ROWS // max(rows, 1))
    parts = []
    for chunk in x.split(step):
        mean, var = torch.batch_norm_update_stats(chunk, None, None, 1.0)  # biased variance
        n = chunk.numel() // c
        parts.append((n, mean.double(), var.double() * n))
    return pooled(parts)


def _plane_moments(x: Tensor) -> tuple[int, Tensor, Tensor] | None:
    """Moments from the sums of ``x`` and ``x^2`` over each (sample, channel) plane: two fast reads
    of a contiguous tensor, pooled over planes in float64. None where a plane's mean is so large
    against its spread that the sum of squares would lose precision."""
    n, c = x.shape[:2]
    planes = x.view(n, c, -1)
    size = planes.shape[-1]
    s1 = planes.sum(-1).double()
    s2 = torch.linalg.vector_norm(planes, 2, -1).double().square()
    m2 = s2 - s1.square() / size  # per plane
    if not bool((torch.isfinite(s2) & (s2 <= _PLANE_CONDITION * m2)).all()):
        return None
    mean = s1.sum(0) / (n * size)
    return n * size, mean, m2.sum(0) + (s1 / size - mean).square().sum(0) * size


class Moments:
    """One BN's per-batch moments, pooled exactly over all batches."""

    def __init__(self) -> None:
        self.parts: list[tuple[int, Tensor, Tensor]] = []

    def add(self, x: Tensor) -> tuple[int, Tensor, Tensor]:
        self.parts.append(batch_moments(x))
        return self.parts[-1]

    def result(self) -> tuple[Tensor, Tensor]:
        """Mean and unbiased variance of every sample and position (float64)."""
        n, mean, m2 = pooled(self.parts)
        return mean, m2 / max(n - 1, 1)
