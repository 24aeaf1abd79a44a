"""Super-resolution's loss of the training step."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


class L1Loss:
    """L1 to the HR image; inplace distillation: L1 to the largest width's detached output
    (a :class:`~usnet.training.step.SandwichLoss`)."""

    def loss(self, sr_img: Tensor, hr_img: Tensor) -> Tensor:
        return F.l1_loss(sr_img, hr_img)

    def distill_loss(self, sr_img: Tensor, teacher: Tensor, hr_img: Tensor) -> Tensor:
        return F.l1_loss(sr_img, teacher)
