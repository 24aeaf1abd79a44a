"""Classification metrics of a US model at a width (top-1, top-5, loss)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import UsageError
from ...nn import WidthConfig, width


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    width_config: WidthConfig,
    device: torch.device | None = None,
) -> dict[str, float]:
    """Top-1/top-5 accuracy (fractions) and mean cross-entropy over ``loader`` at ``width_config``.

    Runs in eval mode, so the width must be calibrated (or calibration data attached).
    """
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct1 = correct5 = n = 0
    loss = 0.0
    try:
        with width(model, width_config):
            for x, y in loader:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                logits = model(x).float()
                loss += F.cross_entropy(logits, y, reduction="sum").item()
                top = logits.topk(min(5, logits.shape[1]), dim=1).indices
                hit = top == y[:, None]
                correct1 += hit[:, 0].sum().item()
                correct5 += hit.any(dim=1).sum().item()
                n += len(y)
    finally:
        model.train(was_training)
    if n == 0:
        raise UsageError("the evaluation loader yielded no samples")
    return {"top1": correct1 / n, "top5": correct5 / n, "loss": loss / n}
