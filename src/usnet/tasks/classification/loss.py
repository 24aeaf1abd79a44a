"""Classification losses of the training step: labels for the teacher, inplace distillation for
the rest."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def soft_cross_entropy(logits: Tensor, target_probs: Tensor) -> Tensor:
    """``-sum p_teacher * log_softmax(student)``, averaged over the batch (paper: temperature 1)."""
    return -(target_probs * F.log_softmax(logits.float(), dim=-1)).sum(dim=-1).mean()


class ClassificationLoss:
    """Cross-entropy on the labels (optionally label smoothed); soft cross-entropy against the
    teacher's softmax for inplace distillation (a :class:`~usnet.training.step.SandwichLoss`)."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        self.label_smoothing = label_smoothing

    def loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)

    def distill_loss(self, logits: Tensor, teacher: Tensor, labels: Tensor) -> Tensor:
        return soft_cross_entropy(logits, F.softmax(teacher.float(), dim=-1))
