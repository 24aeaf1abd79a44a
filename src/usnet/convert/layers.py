"""The layers a converted network runs: the original modules' weights, sliced to the active
channels of their channel groups (the ``ref.active`` counts of the width space). Convs, linears
and sliced parameters here; the norms in :mod:`.norms`.

Unlike :class:`usnet.nn.USConv2d` and friends they are built *from* an existing module (its
parameters are kept, not copied) and their channel dimensions are :class:`Span` s: one channel
group (the leading channels are active) or the concatenation of several (DenseNet's inputs: the
active channels of each part, gathered).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair
from torch.nn.utils import parametrize

from ..errors import UsageError
from ..nn import GroupRef, WidthSpace
from ..nn.layers import _Sliced, dense_param


class Span:
    """The channels of one tensor dimension: segments ``(group ref, factor)`` laid end to end.

    A segment holds ``factor`` entries per channel of its group (``factor`` = H*W for features
    flattened channel-major); a width keeps the leading ``active * factor`` entries of each
    segment. One segment is a prefix of the dimension (plain slicing); several are gathered by
    :meth:`index` (cached per width).
    """

    __slots__ = ("parts", "full", "prefix", "_index")

    def __init__(self, parts: Sequence[tuple[GroupRef, int]]) -> None:
        self.parts = tuple((ref, int(f)) for ref, f in parts)
        self.full = sum(ref.full * f for ref, f in self.parts)
        self.prefix = len(self.parts) == 1
        self._index: dict[tuple, Tensor] = {}

    @property
    def active(self) -> int:
        if self.prefix:
            ref, f = self.parts[0]
            return ref.active * f
        return sum(ref.active * f for ref, f in self.parts)

    def index(self, device: torch.device) -> Tensor:
        """Positions of the active entries in the full dimension (for several segments)."""
        key = (device, *(ref.active for ref, _ in self.parts))
        idx = self._index.get(key)
        if idx is None:
            pieces, offset = [], 0
            for ref, f in self.parts:
                pieces.append(torch.arange(ref.active * f, device=device) + offset)
                offset += ref.full * f
            if len(self._index) >= 64:
                self._index.clear()
            idx = self._index[key] = torch.cat(pieces)
        return idx

    def take(self, t: Tensor, dim: int) -> Tensor:
        """The active entries of ``t`` along ``dim`` (a view for one segment)."""
        if self.prefix:
            return t.narrow(dim, 0, self.active)
        return t.index_select(dim, self.index(t.device))

    def __repr__(self) -> str:
        parts = " + ".join(
            (repr(ref.group.name) if ref.space is not None else str(ref.full))
            + (f"x{f}" if f != 1 else "")
            for ref, f in self.parts
        )
        return f"Span({parts})"


class _Taken(_Sliced):
    """``_Sliced`` plus gathered input channels (several segments), cached the same way in eval,
    and the whole active (weight, bias, ...) of a network cached by its key: a switched model
    then spends one dictionary lookup per layer, as a dense one spends none."""

    training: bool
    weight: Tensor
    space: WidthSpace

    def _for_network(self, compute: Any) -> Any:
        if self.training or torch.is_grad_enabled():
            return compute()
        cache: dict = self.__dict__.setdefault("_slice_cache", {})
        key = ("network", self.space.key)
        version = (self.weight._version, self.weight.data_ptr())
        hit = cache.get(key)
        if hit is not None and hit[0] == version:
            return hit[1]
        value = compute()
        if len(cache) > 64:
            cache.clear()
        cache[key] = (version, value)
        return value

    def _take(self, param: Tensor, out: int, span: Span | None) -> Tensor:
        if span is None or span.prefix:
            return self._slice(param, out, None if span is None else span.active)
        if self.training or torch.is_grad_enabled():
            return span.take(param[:out], 1)
        cache: dict = self.__dict__.setdefault("_slice_cache", {})
        key = (id(param), out, "gather", *(ref.active for ref, _ in span.parts))
        hit = cache.get(key)
        if hit is not None and hit[0] == (param._version, param.data_ptr()):
            return hit[1]
        taken = span.take(param[:out], 1)
        if len(cache) > 64:
            cache.clear()
        cache[key] = ((param._version, param.data_ptr()), taken)
        return taken


def _space_of(*spans: Span | None) -> WidthSpace:
    for span in spans:
        for ref, _ in span.parts if span is not None else ():
            if ref.space is not None:
                return ref.space
    raise UsageError("a converted layer needs a span with a slimmable channel group")


def count(span: Span | None, full: int) -> int:
    return full if span is None else span.active


class SlimConv2d(_Taken, nn.Conv2d):
    """A converted ``nn.Conv2d``. Grouped convs keep the group *width* (channels per group) and
    run with ``active / group width`` groups, so a width is a prefix of whole groups: depthwise
    convs are the case of width 1, RegNet's and ResNeXt's grouped convs the general one."""

    def __init__(
        self, conv: nn.Conv2d, inp: Span | None, out: Span | None, same: bool = False
    ) -> None:
        super().__init__(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,  # type: ignore[arg-type]
            conv.stride,  # type: ignore[arg-type]
            conv.padding,  # type: ignore[arg-type]
            conv.dilation,  # type: ignore[arg-type]
            conv.groups,
            conv.bias is not None,
            conv.padding_mode,
            device="meta",
        )
        self.weight, self.bias = conv.weight, conv.bias
        self.in_span, self.out_span = inp, out
        self.space = _space_of(inp, out)
        self.same: Any = None  # timm's Conv2dSame: TensorFlow's "same" padding, per input size
        if same:
            from timm.layers.padding import pad_same

            self.same = pad_same

    def _active(self) -> tuple[Tensor, Tensor | None, int]:
        cout = count(self.out_span, self.out_channels)
        if self.groups > 1:  # a prefix of whole groups: the per-group inputs stay as they are
            weight = self._slice(self.weight, cout, None)
            groups = cout // (self.out_channels // self.groups)
        else:
            weight, groups = self._take(self.weight, cout, self.in_span), 1
        bias = None if self.bias is None else self._slice(self.bias, cout, None)
        return weight, bias, groups

    def forward(self, x: Tensor) -> Tensor:
        weight, bias, groups = self._for_network(self._active)
        if self.same is not None:
            x = self.same(x, self.kernel_size, self.stride, self.dilation)
        if self.padding_mode != "zeros":
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return F.conv2d(x, weight, bias, self.stride, _pair(0), self.dilation, groups)
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, groups)

    def extra_repr(self) -> str:
        return f"{self.in_span} -> {self.out_span}, " + super().extra_repr()

    @torch.no_grad()
    def to_dense(self, stats: bool = True) -> nn.Conv2d:
        """The plain ``nn.Conv2d`` of the current width (the export hook; weights copied)."""
        weight, bias, groups = self._active()
        cls: Any = nn.Conv2d
        if self.same is not None:
            from timm.layers import Conv2dSame

            cls = Conv2dSame
        conv = cls(
            weight.shape[1] * groups,
            weight.shape[0],
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=groups,
            bias=bias is not None,
            device="meta",  # no initialisation: the weights come next
            dtype=weight.dtype,
        )
        conv.padding_mode = self.padding_mode
        conv.weight = dense_param(weight)
        if bias is not None:
            conv.bias = dense_param(bias)
        return conv


class SlimLinear(_Taken, nn.Linear):
    """A converted ``nn.Linear`` (inputs on the last dimension)."""

    def __init__(self, linear: nn.Linear, inp: Span | None, out: Span | None) -> None:
        super().__init__(
            linear.in_features, linear.out_features, linear.bias is not None, device="meta"
        )
        self.weight, self.bias = linear.weight, linear.bias
        self.in_span, self.out_span = inp, out
        self.space = _space_of(inp, out)

    def _active(self) -> tuple[Tensor, Tensor | None]:
        cout = count(self.out_span, self.out_features)
        weight = self._take(self.weight, cout, self.in_span)
        bias = None if self.bias is None else self._slice(self.bias, cout, None)
        return weight, bias

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, *self._for_network(self._active))

    def extra_repr(self) -> str:
        return f"{self.in_span} -> {self.out_span}, bias={self.bias is not None}"

    @torch.no_grad()
    def to_dense(self, stats: bool = True) -> nn.Linear:
        weight, bias = self._active()
        linear = nn.Linear(weight.shape[1], weight.shape[0], bias is not None, "meta", weight.dtype)
        linear.weight = dense_param(weight)
        if bias is not None:
            linear.bias = dense_param(bias)
        return linear


class SliceChannels(nn.Module):
    """A parametrization: a per-channel parameter (ConvNeXt's layer scale) at the active width."""

    def __init__(self, span: Span, dim: int) -> None:
        super().__init__()
        self.span, self.dim = span, dim

    def forward(self, x: Tensor) -> Tensor:
        return self.span.take(x, self.dim)


def slice_parameter(module: nn.Module, name: str, span: Span, dim: int) -> None:
    """Make ``module.<name>`` read as its active channels (``torch.nn.utils.parametrize``), and
    give the module the export hook that leaves the sliced copy behind."""
    parametrize.register_parametrization(module, name, SliceChannels(span, dim), unsafe=True)
    cls: Any = type(module)  # the class parametrize made for this module alone
    cls.to_dense = _dense_parametrized


@torch.no_grad()
def _dense_parametrized(self: nn.Module, stats: bool = True) -> nn.Module:
    """Export hook of a module with sliced parameters: its own class again, with plain
    parameters holding the slices.

    Works on ``extract``'s copy without ``remove_parametrizations``, which would edit the class
    the copy shares with the US model, and leaves the originals (shared too) untouched.
    """
    plist: Any = self.parametrizations
    slices = {name: getattr(self, name).detach().clone() for name in list(plist.keys())}
    kinds = {name: isinstance(plist[name].original, nn.Parameter) for name in slices}
    del self._modules["parametrizations"]
    self.__class__ = type(self).__bases__[0]  # the class parametrize derived this one from
    for name, value in slices.items():
        if kinds[name]:
            setattr(self, name, dense_param(value))
        else:
            self.register_buffer(name, value)
    return self
