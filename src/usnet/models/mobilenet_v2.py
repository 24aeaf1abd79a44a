"""US-MobileNet v2 (the authors' ``us_mobilenet_v2``) and a small-input variant.

Width range [0.35, 1.0]. Not slimmed: the image channels into the stem, the last 1x1 conv's 1280
outputs and the BN after them (its inputs slim, so that BN still keeps statistics per width), the
classifier. Expanded channels are a multiple of the block's expansion factor; both sides of every
residual add are one channel group.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..nn import GroupRef, Residual, USConv2d, init_weights, make_divisible
from .base import USModel
from .registry import register_model

# (expansion t, channels c, repeats n, stride s), as in the paper.
IMAGENET_BLOCKS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
# 28-32 px inputs: stem stride 2, 8x down-sampling, fewer and narrower blocks
# (7.59 M MACs at width 1.0, 1.55 M at 0.35 for 28 px; its 6x expanded maps make it ~3x slower
# per step than us_mobilenet_v1_small on a CPU).
SMALL_BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 2, 2), (6, 64, 2, 2), (6, 96, 1, 1))


class InvertedResidual(nn.Module):
    def __init__(
        self, model: USModel, name: str, inp: GroupRef, outp: GroupRef, stride: int, t: int
    ) -> None:
        super().__init__()
        self.residual = stride == 1 and inp is outp
        layers: list[nn.Module] = []
        hidden = inp
        if t != 1:
            hidden = model.width_space.group(f"{name}.expand", inp.full * t, ratio=t)
            layers += [USConv2d(inp, hidden, 1), model.norm(hidden), nn.ReLU6(True)]
        layers += [
            USConv2d(hidden, hidden, 3, stride, depthwise=True),
            model.norm(hidden),
            nn.ReLU6(True),
            USConv2d(hidden, outp, 1),
            model.norm(outp),
        ]
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x) if self.residual else self.body(x)

    def to_dense(self, stats: bool = True) -> nn.Module:
        """Export hook (children already dense): the body, plus its skip connection."""
        return Residual(self.body) if self.residual else self.body


class USMobileNetV2(USModel):
    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        input_size: int = 224,
        width_min: float = 0.35,
        width_max: float = 1.0,
        stem_stride: int = 2,
        last_channels: int = 1280,
        blocks: Sequence[Sequence[int]] = IMAGENET_BLOCKS,
        switches: Sequence[float] | None = None,
    ) -> None:
        super().__init__(width_min, width_max, (in_chans, input_size, input_size), switches)
        space = self.width_space
        ch = space.group("stem", make_divisible(32 * width_max))
        last = make_divisible(last_channels * width_max) if width_max > 1.0 else last_channels
        layers: list[nn.Module] = [
            nn.Sequential(USConv2d(in_chans, ch, 3, stem_stride), self.norm(ch), nn.ReLU6(True))
        ]
        for stage, (t, c, n, s) in enumerate(blocks):
            out = space.group(f"stage{stage}", make_divisible(c * width_max))
            for i in range(n):
                name = f"block{len(layers)}"
                layers.append(InvertedResidual(self, name, ch, out, s if i == 0 else 1, t))
                ch = out
        layers.append(nn.Sequential(USConv2d(ch, last, 1), self.norm(last), nn.ReLU6(True)))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(last, num_classes)
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
def us_mobilenet_v2(**kwargs: Any) -> USMobileNetV2:
    """The authors' ImageNet US-MobileNet v2: 224 px, width [0.35, 1.0], 301 M MACs at 1.0."""
    return USMobileNetV2(**kwargs)


@register_model
def us_mobilenet_v2_small(**kwargs: Any) -> USMobileNetV2:
    """US-MobileNet v2 for 28-32 px images (Fashion-MNIST, CIFAR): 8x down-sampling, 16-96 channels.

    7.59 M MACs at width 1.0 and 1.55 M at 0.35 (28x28x1 input).
    """
    defaults: dict = dict(
        num_classes=10,
        in_chans=1,
        input_size=28,
        stem_stride=2,
        last_channels=512,
        blocks=SMALL_BLOCKS,
    )
    return USMobileNetV2(**{**defaults, **kwargs})
