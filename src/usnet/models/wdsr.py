"""US-WDSR: WDSR-A wide-activation blocks with weight normalisation, slimmable.

Weight normalisation on a slimmable conv is computed over the *active* slice of the direction
``v`` (per active output channel, over its active inputs and the kernel), so every width is a
proper weight-normed conv ``w = g * v / ||v||`` rather than a slice of the full width's weights.
The body's features are one channel group; each block's wide activation is its own group. The
image channels never slim: the head reads 3 channels, the tail and the skip branch write
``3 * scale**2`` channels that a pixel shuffle turns into the RGB image.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor, nn

from ..nn import GroupRef, USConv, make_divisible
from .base import USModel
from .edsr import MeanShift, check_scale
from .registry import register_model


def wn_conv(in_channels: int | GroupRef, out_channels: int | GroupRef, kernel_size: int) -> USConv:
    """A slimmable conv with weight normalisation over its active slice: at a width the kernel
    is ``g[:out] * v[:out, :in] / ||v[:out, :in]||`` (``weight`` is ``v``, ``weight_g`` is ``g``)."""
    return USConv(in_channels, out_channels, kernel_size, bias=True, weight_norm=True)


class WideBlock(nn.Module):
    """WDSR-A block: ``x + res_scale * conv(relu(conv_expand(x)))`` with weight-normed convs."""

    def __init__(self, feats: GroupRef, wide: GroupRef, res_scale: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            wn_conv(feats, wide, 3),
            nn.ReLU(inplace=True),
            wn_conv(wide, feats, 3),
        )
        self.res_scale = res_scale

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x) * self.res_scale


class USWDSR(USModel):
    task = "sr"

    def __init__(
        self,
        scale: int = 2,
        n_resblocks: int = 4,
        n_feats: int = 32,
        expansion: int = 4,
        res_scale: float = 1.0,
        width_min: float = 0.25,
        width_max: float = 1.0,
        patch_size: int = 48,
    ) -> None:
        super().__init__(width_min, width_max, (3, patch_size, patch_size))
        self.scale = s = check_scale(scale)
        space = self.width_space
        feats = space.group("body", make_divisible(n_feats * width_max))
        self.sub_mean = MeanShift(sign=-1.0)
        self.head = wn_conv(3, feats, 3)
        self.body = nn.Sequential(
            *(
                WideBlock(feats, space.group(f"block{i}.wide", feats.full * expansion), res_scale)
                for i in range(n_resblocks)
            )
        )
        self.tail = nn.Sequential(wn_conv(feats, 3 * s * s, 3), nn.PixelShuffle(s))
        self.skip = nn.Sequential(wn_conv(3, 3 * s * s, 5), nn.PixelShuffle(s))
        self.add_mean = MeanShift(sign=1.0)
        self._start_at_nearest()
        self.finish()

    @torch.no_grad()
    def _start_at_nearest(self) -> None:
        """Start as nearest-neighbour upscaling: the skip copies each pixel to its ``s x s``
        sub-pixels and the tail starts at zero, so short (CPU) runs begin from a sane image."""
        s = self.scale
        skip, tail = cast(USConv, self.skip[0]), cast(USConv, self.tail[0])
        assert skip.bias is not None and tail.bias is not None
        skip.weight.zero_()
        centre = skip.kernel_size[0] // 2
        for c in range(3):
            skip.weight[c * s * s : (c + 1) * s * s, c, centre, centre] = 1.0
        skip.weight_g.fill_(1.0)
        skip.bias.zero_()
        tail.weight_g.zero_()
        tail.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        x = self.sub_mean(x)
        return self.add_mean(self.tail(self.body(self.head(x))) + self.skip(x))


@register_model
def us_wdsr(**kwargs: Any) -> USWDSR:
    """US-WDSR-A (sized for CPU): 4 wide-activation blocks, 32 features x4 expansion, x2."""
    return USWDSR(**kwargs)
