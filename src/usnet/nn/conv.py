"""The slimmable convolution: 1-D, 2-D and 3-D, plain and transposed, in one class.

A width keeps the leading channels of the conv's input and output spans (gathered where a span
is a concatenation). Grouped convs keep their group *width* (channels per group) and run with
``active / group width`` groups, so a width is a prefix of whole groups: depthwise convs are the
case of width 1, ResNeXt's and RegNet's grouped convs the general one. With ``weight_norm`` the
kernel is normalised over its *active* slice (per active output channel), so every width is a
proper weight-normalised conv (WDSR) rather than a slice of the full width's kernel.
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.utils import _ntuple

from ..errors import UsageError
from .groups import Counts, Span, as_span
from .shared_grad import narrow
from .sliced import Sliced, current, dense_param, space_of

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_DENSE = {
    (1, False): nn.Conv1d,
    (2, False): nn.Conv2d,
    (3, False): nn.Conv3d,
    (1, True): nn.ConvTranspose1d,
    (2, True): nn.ConvTranspose2d,
    (3, True): nn.ConvTranspose3d,
}


class USConv(Sliced, _ConvNd):
    """A convolution whose in/out channels follow spans of channel groups.

    Built directly (the built-in models: ``USConv(in_group, out_group, 3, stride=2)``; plain
    ints are channels that never slim, ``depthwise=True`` makes ``groups`` the input channels)
    or from an existing conv by :meth:`from_module`, which keeps its parameters.
    """

    def __init__(
        self,
        in_channels: int | Span,
        out_channels: int | Span,
        kernel_size: int | tuple[int, ...],
        stride: int | tuple[int, ...] = 1,
        padding: int | tuple[int, ...] | str | None = None,
        dilation: int | tuple[int, ...] = 1,
        groups: int = 1,
        bias: bool = False,
        *,
        depthwise: bool = False,
        dims: int = 2,
        transposed: bool = False,
        output_padding: int | tuple[int, ...] = 0,
        padding_mode: Any = "zeros",
        weight_norm: bool = False,
        same: bool = False,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        in_span, out_span = as_span(in_channels), as_span(out_channels)
        if depthwise:
            if in_span.segments != out_span.segments or in_span.space is not out_span.space:
                raise UsageError(
                    f"a depthwise USConv needs one channel group for in and out, got "
                    f"{in_span!r} and {out_span!r}"
                )
            groups = in_span.full
        pair = _ntuple(dims)
        kernel = pair(kernel_size)
        if padding is None:
            padding = tuple(d * (k - 1) // 2 for d, k in zip(pair(dilation), kernel, strict=True))
        super().__init__(
            in_span.full,
            out_span.full,
            kernel,
            pair(stride),
            padding if isinstance(padding, str) else pair(padding),
            pair(dilation),
            transposed,
            pair(output_padding),
            groups,
            bias,
            padding_mode,
            device=device,
            dtype=dtype,
        )
        self.in_span, self.out_span = in_span, out_span
        self.space = space_of(in_span, out_span)
        self.dims = dims
        self.same = same  # timm's Conv2dSame: TensorFlow's "same" padding, per input size
        self.weight_norm = weight_norm
        if weight_norm:  # as torch's weight_norm: g starts at the direction's norm (w == v)
            g = self.weight.detach().flatten(1).norm(dim=1)
            self.weight_g = nn.Parameter(g.view(-1, *(1,) * (self.weight.dim() - 1)))
        self._views = (
            (in_span.prefix or groups > 1) and out_span.prefix and not weight_norm
        )

    @classmethod
    def from_module(
        cls, conv: _ConvNd, inp: Span | None, out: Span | None, same: bool = False
    ) -> USConv:
        """The slimmable form of ``conv`` (its parameters kept, not copied); ``None`` spans are
        channels that never slim."""
        layer = cls(
            inp if inp is not None else conv.in_channels,
            out if out is not None else conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.groups,
            conv.bias is not None,
            dims=len(conv.kernel_size),
            transposed=conv.transposed,
            output_padding=conv.output_padding,
            padding_mode=conv.padding_mode,
            same=same,
            device="meta",
        )
        layer.weight, layer.bias = conv.weight, conv.bias
        return layer

    @property
    def depthwise(self) -> bool:
        """One input channel per group, as many groups as input channels."""
        return self.groups > 1 and self.groups == self.in_channels

    # -- the active tensors ---------------------------------------------------------------
    _names = ("weight", "bias")

    def _sources(self) -> tuple[Tensor | None, ...]:
        return self.weight, self.bias

    def _compute(self, counts: Counts, key: str) -> tuple[Tensor, Tensor | None, int]:
        """(weight, bias, groups) at ``counts``."""
        w, inp, out = self.weight, self.in_span, self.out_span
        if self.transposed:  # weight (in, out / groups, *kernel)
            if self.groups > 1:  # whole groups of inputs; per-group outputs stay
                cin = inp.count(counts)
                weight, groups = narrow(w, cin), cin // (self.in_channels // self.groups)
            elif inp.prefix and out.prefix:
                weight, groups = narrow(w, inp.count(counts), out.count(counts)), 1
            else:
                weight, groups = out.take(inp.take(w, 0, counts), 1, counts), 1
        elif self.groups > 1:  # weight (out, in / groups, *kernel): whole groups of outputs
            weight = narrow(w, out.count(counts)) if out.prefix else out.take(w, 0, counts)
            groups = weight.shape[0] // (self.out_channels // self.groups)
        elif inp.prefix and out.prefix:
            weight, groups = narrow(w, out.count(counts), inp.count(counts)), 1
        else:
            weight, groups = inp.take(out.take(w, 0, counts), 1, counts), 1
        if self.weight_norm:
            dims = (1,) * (weight.dim() - 1)
            norm = weight.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *dims)
            weight = self.weight_g[: weight.shape[0]] * weight / norm
        bias: Tensor | None = self.bias
        if bias is not None:
            bias = narrow(bias, out.count(counts)) if out.prefix else out.take(bias, 0, counts)
        return weight, bias, groups

    # -- forward --------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        weight, bias, groups = self._current()
        if self.same:
            from timm.layers.padding import pad_same

            x = pad_same(x, *cast(Any, (self.kernel_size, self.stride, self.dilation)))
        padding: Any = self.padding
        if self.padding_mode != "zeros":
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = 0
        if self.transposed:
            return _CONV_T[self.dims](
                x, weight, bias, self.stride, padding, self.output_padding, groups, self.dilation
            )
        return _CONV[self.dims](x, weight, bias, self.stride, padding, self.dilation, groups)

    def extra_repr(self) -> str:
        extra = ", weight_norm" if self.weight_norm else ""
        return f"{self.in_span} -> {self.out_span}, " + super().extra_repr() + extra

    @torch.no_grad()
    def to_dense(self, stats: bool = True) -> nn.Module:
        """The plain torch conv of the current width (the export hook; weights copied)."""
        weight, bias, groups = self._compute(*current(self.space))
        if self.transposed:
            cin, cout = weight.shape[0], weight.shape[1] * groups
        else:
            cin, cout = weight.shape[1] * groups, weight.shape[0]
        cls: Any = _DENSE[(self.dims, self.transposed)]
        kwargs: dict[str, Any] = {"output_padding": self.output_padding} if self.transposed else {}
        if self.same:
            from timm.layers import Conv2dSame

            cls = Conv2dSame
        conv = cls(
            cin,
            cout,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=groups,
            bias=bias is not None,
            device="meta",  # no initialisation: the weights come next
            dtype=weight.dtype,
            **kwargs,
        )
        conv.padding_mode = self.padding_mode
        conv.weight = dense_param(weight)
        if bias is not None:
            conv.bias = dense_param(bias)
        return conv


#: The 2-D conv of the built-in models (``USConv``'s default ``dims``).
USConv2d = USConv
