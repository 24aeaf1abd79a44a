"""One training step: the sandwich rule with inplace distillation (design.md, "Training step")."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from ..nn import width_space
from .losses import soft_cross_entropy


def sandwich_step(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    widths: Sequence[float],
    inplace_distillation: bool = True,
    label_smoothing: float = 0.0,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    backward: Callable[[Tensor], None] = Tensor.backward,
) -> list[Tensor]:
    """Forward and backward ``x`` at each width in turn; gradients accumulate (no optimizer step).

    The first width trains on labels. With ``inplace_distillation`` and the first width being
    the model's largest, every other width trains on its detached softmax (soft cross-entropy,
    no label term); otherwise every width trains on labels. Under DDP (``model`` wrapped in
    DistributedDataParallel) all but the last backward run in ``no_sync()``, so gradients are
    all-reduced once per step. Returns the detached loss of each width.
    """
    space = width_space(model)
    teacher: Tensor | None = None
    losses = []
    for i, w in enumerate(widths):
        last = i == len(widths) - 1
        sync = contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            space.set(w)
            with autocast():
                logits = model(x)
            if teacher is None:
                loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
                if i == 0 and inplace_distillation and w >= space.width_max - 1e-9:
                    teacher = F.softmax(logits.detach().float(), dim=-1)
            else:
                loss = soft_cross_entropy(logits, teacher)
            backward(loss)
        losses.append(loss.detach())
    return losses
