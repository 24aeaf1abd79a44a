"""Layer, group and instance norm over the active channels of a span.

Unlike batch norm they need no per-width statistics: each normalises a sample over the channels
the width keeps (as a dense network of that width would), with the affine parameters of those
channels. All are built from an existing module (its parameters kept) by ``from_module``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UsageError
from .groups import Counts, Span, as_span
from .sliced import Sliced, dense_param
from .space import WidthSpace


class _AffineNorm(Sliced):
    """A norm with optional per-channel ``weight`` and ``bias`` over ``span``."""

    space: WidthSpace
    weight: Tensor | None
    bias: Tensor | None

    def _adopt(self, norm: nn.Module, span: Span | None, channels: int) -> None:
        self.span = as_span(span if span is not None else channels)
        if not isinstance(self.span.space, WidthSpace):
            raise UsageError("a slimmable norm needs a span with a slimmable channel group")
        self.space = self.span.space
        self.weight = getattr(norm, "weight", None)
        self.bias = getattr(norm, "bias", None)
        self._views = self.span.prefix

    _names = ("weight", "bias")

    def _sources(self) -> tuple[Tensor | None, ...]:
        return self.weight, self.bias

    def _compute(self, counts: Counts, key: str) -> tuple[int, Tensor | None, Tensor | None]:
        take = self.span.take
        return (
            self.span.count(counts),
            None if self.weight is None else take(self.weight, 0, counts),
            None if self.bias is None else take(self.bias, 0, counts),
        )

    def _dense_affine(self, norm: Any, weight: Tensor | None, bias: Tensor | None) -> Any:
        ref = weight if weight is not None else bias
        if ref is not None:
            norm = norm.to(ref.device, ref.dtype)
        if weight is not None:
            norm.weight = dense_param(weight)
        if bias is not None:
            norm.bias = dense_param(bias)
        return norm


class USLayerNorm(_AffineNorm):
    """A layer norm over channels, normalising over the *active* channels. ``channels_first``:
    over dim 1 of ``(N, C, H, W)`` (ConvNeXt's ``LayerNorm2d``); otherwise over the last dim."""

    def __init__(self, ln: nn.LayerNorm, span: Span | None, channels_first: bool = False) -> None:
        super().__init__()
        self._adopt(ln, span, ln.normalized_shape[0])
        self.eps, self.channels_first = ln.eps, channels_first

    def forward(self, x: Tensor) -> Tensor:
        c, weight, bias = self._current()
        if self.channels_first:
            x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, (c,), weight, bias, self.eps)
        return x.permute(0, 3, 1, 2) if self.channels_first else x

    def extra_repr(self) -> str:
        return f"{self.span}, eps={self.eps}, channels_first={self.channels_first}"

    @torch.no_grad()
    def to_dense(self, stats: bool = True) -> nn.Module:
        c, weight, bias = self._compute(self.space.active, self.space.key)
        if self.channels_first:
            from torchvision.models.convnext import LayerNorm2d

            ln: Any = LayerNorm2d((c,), self.eps, weight is not None)
        else:
            ln = nn.LayerNorm((c,), self.eps, weight is not None, bias=bias is not None)
        return self._dense_affine(ln, weight, bias)


class USGroupNorm(_AffineNorm):
    """A group norm with its group *width* kept: ``active / width`` groups. One group stays one
    group (``GroupNorm(1, C)``: a layer norm over the active channels of a feature map)."""

    def __init__(self, gn: nn.GroupNorm, span: Span | None) -> None:
        super().__init__()
        self._adopt(gn, span, gn.num_channels)
        self.eps, self.num_groups, self.num_channels = gn.eps, gn.num_groups, gn.num_channels
        self.act: nn.Module | None = getattr(gn, "act", None)  # timm's GroupNormAct
        self.drop: nn.Module | None = getattr(gn, "drop", None)

    def _groups(self, c: int) -> int:
        return 1 if self.num_groups == 1 else c // (self.num_channels // self.num_groups)

    def forward(self, x: Tensor) -> Tensor:
        c, weight, bias = self._current()
        x = F.group_norm(x, self._groups(c), weight, bias, self.eps)
        if self.drop is not None:
            x = self.drop(x)
        return x if self.act is None else self.act(x)

    def extra_repr(self) -> str:
        return f"{self.span}, groups={self.num_groups}, eps={self.eps}"

    @torch.no_grad()
    def to_dense(self, stats: bool = True) -> nn.Module:
        c, weight, bias = self._compute(self.space.active, self.space.key)
        gn = self._dense_affine(
            nn.GroupNorm(self._groups(c), c, self.eps, weight is not None), weight, bias
        )
        extra = [m for m in (self.drop, self.act) if m is not None]
        return nn.Sequential(gn, *extra) if extra else gn


class USInstanceNorm(_AffineNorm):
    """Instance norm (any input rank) over the active channels; tracked running statistics,
    if any, are the original ones of the active channels (eval only; training normalises each
    instance with its own statistics and leaves them alone)."""

    running_mean: Tensor | None
    running_var: Tensor | None

    def __init__(self, norm: nn.modules.instancenorm._InstanceNorm, span: Span | None) -> None:
        super().__init__()
        self._adopt(norm, span, norm.num_features)
        self.eps, self.dense_type = norm.eps, type(norm)
        self.num_features = norm.num_features
        self.register_buffer("running_mean", norm.running_mean)
        self.register_buffer("running_var", norm.running_var)

    def forward(self, x: Tensor) -> Tensor:
        _, weight, bias = self._current()
        counts = self.space.counts()
        mean, var = self.running_mean, self.running_var
        if mean is None or var is None or self.training:
            return F.instance_norm(x, None, None, weight, bias, True, 0.0, self.eps)
        mean, var = self.span.take(mean, 0, counts), self.span.take(var, 0, counts)
        return F.instance_norm(x, mean, var, weight, bias, False, 0.0, self.eps)

    @torch.no_grad()
    def to_dense(self, stats: bool = True) -> nn.Module:
        c, weight, bias = self._compute(self.space.active, self.space.key)
        mean, var = self.running_mean, self.running_var
        tracked = mean is not None and var is not None
        norm = self.dense_type(c, self.eps, affine=weight is not None, track_running_stats=tracked)
        norm = self._dense_affine(norm, weight, bias)
        if mean is not None and var is not None:
            counts = self.space.active
            norm.running_mean.copy_(self.span.take(mean, 0, counts))
            norm.running_var.copy_(self.span.take(var, 0, counts))
        return norm
