"""The norms of a converted network: batch norm with per-width statistics (a
:class:`~usnet.nn.USBatchNorm2d`, so calibration, checkpoints and export know it), layer and
group norm over the active channels."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn import USBatchNorm2d, WidthSpace
from ..nn.layers import dense_param
from .layers import Span, count


class SlimBatchNorm(USBatchNorm2d):
    """A converted ``nn.BatchNorm1d``/``2d``: a :class:`USBatchNorm2d` (per-width statistics,
    found by calibration and checkpoints as such) over a :class:`Span`, keeping the original
    affine parameters. 2-D inputs ``(N, C)`` work too; the dense form has the original's class."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm, span: Span | None, space: WidthSpace):
        super().__init__(bn.num_features, space, eps=bn.eps)
        if span is not None:  # a Span has GroupRef's .active and .full
            self.ref = span  # type: ignore[assignment]
        if bn.affine:
            self.weight, self.bias = bn.weight, bn.bias
        else:  # the identity affine, where the statistics live
            self.to(bn.running_mean.device if bn.running_mean is not None else "cpu")
        self.dense_type = nn.BatchNorm1d if isinstance(bn, nn.BatchNorm1d) else nn.BatchNorm2d

    def _gathered(self) -> bool:
        return isinstance(self.ref, Span) and not self.ref.prefix

    def forward(self, x: Tensor) -> Tensor:
        if not self._gathered():
            return super().forward(x)
        span: Span = self.ref  # type: ignore[assignment]
        weight, bias = span.take(self.weight, 0), span.take(self.bias, 0)
        if self.training:
            return F.batch_norm(x, None, None, weight, bias, True, 0.0, self.eps)
        stats = self.get_stats(self.space.key)
        if stats is None:
            raise self._uncalibrated()
        return F.batch_norm(x, stats[0], stats[1], weight, bias, False, 0.0, self.eps)

    @torch.no_grad()
    def to_dense(self, stats: bool = True) -> Any:  # BatchNorm1d or 2d, as the original
        c = self.ref.active
        bn: Any = self.dense_type(
            c, eps=self.eps, device=self.weight.device, dtype=self.weight.dtype
        )
        if self._gathered():
            span: Span = self.ref  # type: ignore[assignment]
            weight, bias = span.take(self.weight, 0), span.take(self.bias, 0)
        else:
            weight, bias = self.weight[:c], self.bias[:c]
        bn.weight, bn.bias = dense_param(weight), dense_param(bias)
        if stats:
            found = self.get_stats(self.space.key)
            if found is None:
                raise self._uncalibrated()
            bn.running_mean.copy_(found[0])
            bn.running_var.copy_(found[1])
        return bn


class SlimBatchNormAct(SlimBatchNorm):
    """timm's ``BatchNormAct2d`` (batch norm, dropout and activation in one module)."""

    drop: nn.Module
    act: nn.Module

    def __init__(self, bn: Any, span: Span | None, space: WidthSpace) -> None:
        super().__init__(bn, span, space)
        self.drop, self.act = bn.drop, bn.act

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.drop(super().forward(x)))

    def to_dense(self, stats: bool = True) -> Any:  # batch norm, dropout, activation in turn
        return nn.Sequential(super().to_dense(stats), self.drop, self.act)


class SlimTrainBatchNorm(nn.Module):
    """A batch norm that only training reaches (GoogLeNet's and Inception's auxiliary heads).

    Training normalises the active channels with batch statistics, as every US batch norm
    does. Eval forwards never reach it, so calibration cannot give it per-width statistics; it
    is no :class:`USBatchNorm2d` (calibration and checkpoints do not wait for it) and, should
    eval reach it after all, it uses the original running statistics of its active channels.
    timm's ``BatchNormAct2d`` keeps its dropout and activation.
    """

    def __init__(self, bn: Any, span: Span | None) -> None:
        super().__init__()
        self.span, self.eps = span, bn.eps
        self.num_features = bn.num_features
        self.weight, self.bias = bn.weight, bn.bias
        self.register_buffer("running_mean", bn.running_mean)
        self.register_buffer("running_var", bn.running_var)
        self.drop: nn.Module = getattr(bn, "drop", None) or nn.Identity()
        self.act: nn.Module = getattr(bn, "act", None) or nn.Identity()
        self.dense_type = nn.BatchNorm1d if isinstance(bn, nn.BatchNorm1d) else nn.BatchNorm2d

    def _active(self) -> list[Tensor | None]:
        tensors = [self.weight, self.bias, self.running_mean, self.running_var]
        if self.span is None:
            return tensors
        return [None if t is None else self.span.take(t, 0) for t in tensors]

    def forward(self, x: Tensor) -> Tensor:
        weight, bias, mean, var = self._active()
        if self.training:
            x = F.batch_norm(x, None, None, weight, bias, True, 0.0, self.eps)
        else:
            x = F.batch_norm(x, mean, var, weight, bias, False, 0.0, self.eps)
        return self.act(self.drop(x))

    @torch.no_grad()
    def to_dense(self, stats: bool = True) -> nn.Module:
        weight, bias, mean, var = self._active()
        assert mean is not None and var is not None
        bn: Any = self.dense_type(mean.shape[0], self.eps, affine=weight is not None)
        bn = bn.to(mean.device)
        if weight is not None and bias is not None:
            bn.weight, bn.bias = dense_param(weight), dense_param(bias)
        if stats:
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
        if isinstance(self.drop, nn.Identity) and isinstance(self.act, nn.Identity):
            return bn
        return nn.Sequential(bn, self.drop, self.act)


class SlimLayerNorm(nn.LayerNorm):
    """A converted layer norm over channels: it normalises over the *active* channels (as batch
    norm keeps statistics of the active ones). ``channels_first``: over dim 1 of ``(N, C, H, W)``
    (ConvNeXt's ``LayerNorm2d``); otherwise over the last dimension."""

    def __init__(self, ln: nn.LayerNorm, span: Span | None, channels_first: bool) -> None:
        super().__init__(
            ln.normalized_shape,
            ln.eps,
            ln.elementwise_affine,
            bias=getattr(ln, "bias", None) is not None,
            device="meta",
        )
        self.weight, self.bias = ln.weight, ln.bias
        self.span, self.channels_first = span, channels_first

    def _active(self) -> tuple[tuple[int], Tensor | None, Tensor | None]:
        span = self.span
        c = count(span, self.normalized_shape[0])
        if span is None:
            return (c,), self.weight, self.bias
        weight = None if self.weight is None else span.take(self.weight, 0)
        bias = None if self.bias is None else span.take(self.bias, 0)
        return (c,), weight, bias

    def forward(self, x: Tensor) -> Tensor:
        if self.channels_first:
            x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, *self._active(), self.eps)
        return x.permute(0, 3, 1, 2) if self.channels_first else x

    def extra_repr(self) -> str:
        return f"{self.span}, eps={self.eps}, channels_first={self.channels_first}"

    @torch.no_grad()
    def to_dense(self, stats: bool = True) -> nn.LayerNorm:
        shape, weight, bias = self._active()
        if self.channels_first:
            from torchvision.models.convnext import LayerNorm2d

            ln: nn.LayerNorm = LayerNorm2d(shape, self.eps, weight is not None)
        else:
            ln = nn.LayerNorm(shape, self.eps, weight is not None, bias=bias is not None)
        ln = ln.to(self.weight.device if self.weight is not None else "cpu")
        if weight is not None:
            ln.weight = dense_param(weight)
        if bias is not None:
            ln.bias = dense_param(bias)
        return ln


class SlimGroupNorm(nn.GroupNorm):
    """A converted ``nn.GroupNorm`` with its group *width* kept: ``active / width`` groups."""

    def __init__(self, gn: nn.GroupNorm, span: Span | None) -> None:
        super().__init__(gn.num_groups, gn.num_channels, gn.eps, gn.affine, device="meta")
        self.weight, self.bias = gn.weight, gn.bias
        self.span = span

    def _active(self) -> tuple[int, int]:
        c = count(self.span, self.num_channels)
        return c // (self.num_channels // self.num_groups), c

    def forward(self, x: Tensor) -> Tensor:
        groups, c = self._active()
        weight = None if self.weight is None else self.weight[:c]
        bias = None if self.bias is None else self.bias[:c]
        return F.group_norm(x, groups, weight, bias, self.eps)

    @torch.no_grad()
    def to_dense(self, stats: bool = True) -> nn.GroupNorm:
        groups, c = self._active()
        gn = nn.GroupNorm(groups, c, self.eps, self.affine)
        if self.affine:
            gn = gn.to(self.weight.device)
            gn.weight, gn.bias = dense_param(self.weight[:c]), dense_param(self.bias[:c])
        return gn
