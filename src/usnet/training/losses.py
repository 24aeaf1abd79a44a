"""Losses of the training step: labels for the largest width, inplace distillation for the rest."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def soft_cross_entropy(logits: Tensor, target_probs: Tensor) -> Tensor:
    """``-sum p_teacher * log_softmax(student)``, averaged over the batch (paper: temperature 1)."""
    return -(target_probs * F.log_softmax(logits.float(), dim=-1)).sum(dim=-1).mean()
