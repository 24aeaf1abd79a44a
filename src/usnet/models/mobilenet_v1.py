"""US-MobileNet v1 (the authors' ``us_mobilenet_v1``) and a small-input variant.

Width range [0.25, 1.0]. Not slimmed: the image channels into the stem, the classifier's outputs.
Every other conv slims; the last features, and so the classifier's inputs, slim too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..nn import GroupRef, USConv2d, USLinear, init_weights, make_divisible
from .base import USModel
from .registry import register_model

# (channels, repeats, stride) of the depthwise-separable stages, as in the paper.
IMAGENET_BLOCKS = ((64, 1, 1), (128, 2, 2), (256, 2, 2), (512, 6, 2), (1024, 2, 2))
# 28-32 px inputs: stem stride 2, then stages of 32-256 channels down to a 4x4 map (8x in all).
# Sized for CPUs: a sandwich-rule epoch over Fashion-MNIST takes ~1.5 min on 2 cores
# (4.61 M MACs at width 1.0, 0.37 M at 0.25 for 28 px).
SMALL_BLOCKS = ((32, 1, 1), (64, 2, 1), (128, 2, 2), (256, 2, 2))


class DepthwiseSeparable(nn.Sequential):
    def __init__(self, model: USModel, inp: GroupRef, outp: GroupRef, stride: int) -> None:
        super().__init__(
            USConv2d(inp, inp, 3, stride, depthwise=True),
            model.norm(inp),
            nn.ReLU6(inplace=True),
            USConv2d(inp, outp, 1),
            model.norm(outp),
            nn.ReLU6(inplace=True),
        )


class USMobileNetV1(USModel):
    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        input_size: int = 224,
        width_min: float = 0.25,
        width_max: float = 1.0,
        stem_channels: int = 32,
        stem_stride: int = 2,
        blocks: Sequence[Sequence[int]] = IMAGENET_BLOCKS,
        switches: Sequence[float] | None = None,
    ) -> None:
        super().__init__(width_min, width_max, (in_chans, input_size, input_size), switches)
        space = self.width_space
        ch = space.group("stem", make_divisible(stem_channels * width_max))
        layers: list[nn.Module] = [
            nn.Sequential(USConv2d(in_chans, ch, 3, stem_stride), self.norm(ch), nn.ReLU6(True))
        ]
        for c, n, s in blocks:
            for _ in range(n):
                out = space.group(f"block{len(layers)}", make_divisible(c * width_max))
                layers.append(DepthwiseSeparable(self, ch, out, s))
                s, ch = 1, out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = USLinear(ch, num_classes)
        init_weights(self)
        self.finish()

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))

    def calibration_stages(self) -> nn.Sequential:
        return self.features

    def to_dense(self, stats: bool = True) -> nn.Sequential:
        """Export hook (children already dense): the forward as one plain ``nn.Sequential``."""
        return nn.Sequential(self.features, self.pool, nn.Flatten(1), self.classifier)


@register_model
def us_mobilenet_v1(**kwargs: Any) -> USMobileNetV1:
    """The authors' ImageNet US-MobileNet v1: 224 px, width [0.25, 1.0], 569 M MACs at 1.0."""
    return USMobileNetV1(**kwargs)


@register_model
def us_mobilenet_v1_small(**kwargs: Any) -> USMobileNetV1:
    """US-MobileNet v1 for 28-32 px images (Fashion-MNIST, CIFAR): 8x down-sampling, 32-256 channels.

    4.61 M MACs at width 1.0 and 0.37 M at 0.25 (28x28x1 input); the default model of
    ``configs/fashion_mnist.yaml``.
    """
    defaults: dict = dict(
        num_classes=10, in_chans=1, input_size=28, stem_stride=2, blocks=SMALL_BLOCKS
    )
    return USMobileNetV1(**{**defaults, **kwargs})
