"""A US multilayer perceptron on flattened images: the smallest US-Net, with or without BN-free layers.

Width range [0.25, 1.0] by default. Not slimmed: the input features and the classifier's
outputs. It has no batch norm, so a data-parallel run must match a single-process run exactly
(the DDP test uses it), and it needs no calibration.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..nn import GroupRef, USLinear, init_weights
from .base import USModel
from .registry import register_model


class USMLP(USModel):
    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 1,
        input_size: int = 28,
        hidden: Sequence[int] = (256, 256),
        width_min: float = 0.25,
        width_max: float = 1.0,
    ) -> None:
        super().__init__(width_min, width_max, (in_chans, input_size, input_size))
        features: int | GroupRef = in_chans * input_size * input_size
        layers: list[nn.Module] = [nn.Flatten()]
        for i, h in enumerate(hidden):
            group = self.width_space.group(f"hidden{i}", h)
            layers += [USLinear(features, group), nn.ReLU(inplace=True)]
            features = group
        layers.append(USLinear(features, num_classes))
        self.net = nn.Sequential(*layers)
        init_weights(self)
        self.finish()

    def forward(self, x: Tensor) -> Tensor:
        return self.net(torch.flatten(x, 1))


@register_model
def us_mlp(**kwargs: Any) -> USMLP:
    """A US MLP for small images (default Fashion-MNIST: 784 -> 256 -> 256 -> 10)."""
    return USMLP(**kwargs)
