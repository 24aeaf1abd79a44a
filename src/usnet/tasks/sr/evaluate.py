"""Super-resolution quality: PSNR and SSIM on the Y channel with a border of ``scale`` pixels
cropped (:mod:`usnet.tasks.sr.metrics`), and the bicubic reference every width must beat."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ...data.sr import bicubic_upscale
from ...errors import UsageError
from ...nn import width as at_width
from .metrics import psnr_y, ssim_y


def _pairs(data: Dataset | DataLoader | Iterable) -> Iterable[tuple[Tensor, Tensor]]:
    """(lr, hr) pairs with a batch axis, from a test set or a loader of batch size 1."""
    if isinstance(data, Dataset) and not isinstance(data, DataLoader):
        for i in range(len(data)):  # type: ignore[arg-type]
            lr, hr = data[i]
            yield lr.unsqueeze(0), hr.unsqueeze(0)
    else:
        yield from data


@torch.no_grad()
def evaluate(
    model: nn.Module, width: Any, data: Dataset | DataLoader | Iterable
) -> dict[str, float]:
    """Mean PSNR and SSIM (Y channel, border = scale) of ``model`` at ``width`` over whole images.

    ``data`` is an :class:`~usnet.data.sr.SRTestSet` (or any dataset of ``(lr, hr)`` pairs) or a
    loader of batch size 1. The model's width and mode are restored afterwards.
    """
    scale = int(cast(Any, model).scale)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    psnrs, ssims = [], []
    try:
        with at_width(model, width):
            for lr, hr in _pairs(data):
                sr = model(lr.to(device)).cpu()
                for s, h in zip(sr, hr, strict=True):
                    psnrs.append(psnr_y(s, h, scale))
                    ssims.append(ssim_y(s, h, scale))
    finally:
        model.train(was_training)
    if not psnrs:
        raise UsageError("evaluate: the SR test data is empty")
    return {"psnr": sum(psnrs) / len(psnrs), "ssim": sum(ssims) / len(ssims)}


def bicubic_metrics(
    data: Dataset | DataLoader | Iterable, scale: int | None = None
) -> dict[str, float]:
    """PSNR/SSIM of Pillow's bicubic upscaling of the LR images: the reference every width must beat."""
    scale = (
        scale
        or getattr(data, "scale", None)
        or getattr(getattr(data, "dataset", None), "scale", None)
    )
    if not scale:
        raise UsageError("bicubic_metrics: pass scale= (the data has no 'scale' attribute)")
    psnrs, ssims = [], []
    for lr, hr in _pairs(data):
        for low, h in zip(lr, hr, strict=True):
            up = bicubic_upscale(low.mul(255).round().byte(), scale).float() / 255
            psnrs.append(psnr_y(up, h, scale))
            ssims.append(ssim_y(up, h, scale))
    return {"psnr": sum(psnrs) / len(psnrs), "ssim": sum(ssims) / len(ssims)}
