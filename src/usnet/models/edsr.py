"""US-EDSR: EDSR-baseline residual blocks (conv-ReLU-conv, residual scaling, no BN) that slim.

The body's features are one channel group (every residual add, the head conv's outputs and the
tail conv's inputs share it), so the body slims over [0.25, 1.0]. The image channels never slim:
the head reads 3 channels and the tail writes ``3 * scale**2`` channels that a pixel shuffle turns
into the RGB image (ESPCN/WDSR-style tail: no conv runs at high resolution, and a slimmed body
cannot change the number of output pixels).

``upsample_skip=True`` adds the bicubically upscaled input to the output (global residual
learning, as in VDSR) and zero-initialises the tail, so training starts at bicubic quality:
the short CPU recipes need it; EDSR proper (the default) learns the whole image.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UsageError
from ..nn import GroupRef, USConv2d, make_divisible
from .base import USModel
from .registry import register_model

#: Mean RGB of DIV2K (as in EDSR), subtracted from the input and added back to the output.
RGB_MEAN = (0.4488, 0.4371, 0.4040)
SCALES = (2, 3, 4)


class MeanShift(nn.Module):
    """Adds ``sign * mean`` per RGB channel (plain torch; exports as is)."""

    shift: Tensor

    def __init__(self, mean: tuple[float, float, float] = RGB_MEAN, sign: float = -1.0) -> None:
        super().__init__()
        self.register_buffer("shift", sign * torch.tensor(mean).view(1, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.shift


class ResBlock(nn.Module):
    """EDSR's block: ``x + res_scale * conv(relu(conv(x)))``; both sides of the add are one group."""

    def __init__(self, feats: GroupRef, res_scale: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            USConv2d(feats, feats, 3, bias=True),
            nn.ReLU(inplace=True),
            USConv2d(feats, feats, 3, bias=True),
        )
        self.res_scale = res_scale

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x) * self.res_scale


def check_scale(scale: int) -> int:
    if scale not in SCALES:
        raise UsageError(f"scale must be one of {list(SCALES)}, got {scale!r}")
    return int(scale)


class USEDSR(USModel):
    task = "sr"

    def __init__(
        self,
        scale: int = 2,
        n_resblocks: int = 8,
        n_feats: int = 32,
        res_scale: float = 1.0,
        width_min: float = 0.25,
        width_max: float = 1.0,
        patch_size: int = 48,
        upsample_skip: bool = False,
    ) -> None:
        super().__init__(width_min, width_max, (3, patch_size, patch_size))
        self.scale = check_scale(scale)
        self.upsample_skip = bool(upsample_skip)
        feats = self.width_space.group("body", make_divisible(n_feats * width_max))
        self.sub_mean = MeanShift(sign=-1.0)
        self.head = USConv2d(3, feats, 3, bias=True)
        self.body = nn.Sequential(
            *(ResBlock(feats, res_scale) for _ in range(n_resblocks)),
            USConv2d(feats, feats, 3, bias=True),
        )
        tail = USConv2d(feats, 3 * self.scale**2, 3, bias=True)
        self.tail = nn.Sequential(tail, nn.PixelShuffle(self.scale))
        self.add_mean = MeanShift(sign=1.0)
        if self.upsample_skip:
            nn.init.zeros_(tail.weight)
            nn.init.zeros_(tail.bias)  # type: ignore[arg-type]  # bias=True above
        self.finish()

    def forward(self, x: Tensor) -> Tensor:
        y = self.head(self.sub_mean(x))
        y = self.tail(y + self.body(y))
        if self.upsample_skip:
            return y + F.interpolate(
                x, scale_factor=self.scale, mode="bicubic", align_corners=False
            )
        return self.add_mean(y)


@register_model
def us_edsr(**kwargs: Any) -> USEDSR:
    """US-EDSR (baseline-style, sized for CPU): 8 blocks x 32 features, x2 by default."""
    return USEDSR(**kwargs)
