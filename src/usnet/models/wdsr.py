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
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn import GroupRef, make_divisible
from ..nn.layers import _Sliced, dense_param
from ..nn.space import as_ref
from .base import USModel
from .edsr import MeanShift, check_scale
from .registry import register_model


class USWeightNormConv2d(nn.Conv2d, _Sliced):
    """A slimmable conv with weight normalisation over its active slice.

    ``weight`` is the direction ``v`` and ``weight_g`` the per-output-channel gain ``g``; at a
    width the kernel is ``g[:out] * v[:out, :in] / ||v[:out, :in]||``. :meth:`to_dense` returns
    the equivalent plain ``nn.Conv2d`` at the current width (for export).
    """

    def __init__(
        self,
        in_channels: int | GroupRef,
        out_channels: int | GroupRef,
        kernel_size: int,
        bias: bool = True,
    ) -> None:
        self.in_ref, self.out_ref = as_ref(in_channels), as_ref(out_channels)
        super().__init__(
            self.in_ref.full, self.out_ref.full, kernel_size, padding=kernel_size // 2, bias=bias
        )
        # As torch's weight_norm: g starts at the full direction's norm, so w == v at full width.
        self.weight_g = nn.Parameter(self.weight.detach().flatten(1).norm(dim=1).view(-1, 1, 1, 1))

    def active_weight(self) -> Tensor:
        """The weight-normed kernel at the current width."""
        v = self._slice(self.weight, self.out_ref.active, self.in_ref.active)
        g = self.weight_g[: v.shape[0]]
        return g * v / v.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias[: self.out_ref.active]
        return F.conv2d(x, self.active_weight(), bias, self.stride, self.padding)

    @torch.no_grad()
    def to_dense(self, stats: bool = True) -> nn.Conv2d:
        """A plain ``nn.Conv2d`` computing what this layer computes at the current width."""
        weight = self.active_weight()
        conv = nn.Conv2d(
            weight.shape[1],
            weight.shape[0],
            self.kernel_size[0],
            padding=self.kernel_size[0] // 2,
            bias=self.bias is not None,
        ).to(weight.device, weight.dtype)
        conv.weight.copy_(weight)
        if self.bias is not None:
            conv.bias = dense_param(self.bias[: weight.shape[0]])
        return conv

    def extra_repr(self) -> str:
        return f"{self.in_ref} -> {self.out_ref}, " + super().extra_repr() + ", weight_norm"


class WideBlock(nn.Module):
    """WDSR-A block: ``x + res_scale * conv(relu(conv_expand(x)))`` with weight-normed convs."""

    def __init__(self, feats: GroupRef, wide: GroupRef, res_scale: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            USWeightNormConv2d(feats, wide, 3),
            nn.ReLU(inplace=True),
            USWeightNormConv2d(wide, feats, 3),
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
        self.head = USWeightNormConv2d(3, feats, 3)
        self.body = nn.Sequential(
            *(
                WideBlock(feats, space.group(f"block{i}.wide", feats.full * expansion), res_scale)
                for i in range(n_resblocks)
            )
        )
        self.tail = nn.Sequential(USWeightNormConv2d(feats, 3 * s * s, 3), nn.PixelShuffle(s))
        self.skip = nn.Sequential(USWeightNormConv2d(3, 3 * s * s, 5), nn.PixelShuffle(s))
        self.add_mean = MeanShift(sign=1.0)
        self._start_at_nearest()
        self.finish()

    @torch.no_grad()
    def _start_at_nearest(self) -> None:
        """Start as nearest-neighbour upscaling: the skip copies each pixel to its ``s x s``
        sub-pixels and the tail starts at zero, so short (CPU) runs begin from a sane image."""
        s = self.scale
        skip, tail = cast(USWeightNormConv2d, self.skip[0]), cast(USWeightNormConv2d, self.tail[0])
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
