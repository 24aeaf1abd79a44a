"""Slimmable convolution and linear layers: run with the leading channels of their weights."""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UsageError
from .space import GroupRef, as_ref

_Pair = tuple[int, int]  # nn.Conv2d's attributes are typed tuple[int, ...]; ours are pairs


def _cut(t: Tensor, out: int, inp: int | None) -> Tensor:
    """The leading ``out`` rows (and ``inp`` columns) of ``t``: a view."""
    if out == t.shape[0] and (inp is None or inp == t.shape[1]):
        return t
    return t[:out] if inp is None else t[:out, :inp]


class _Sliced(nn.Module):
    """Slices weights to the active channels; in eval mode without autograd the slices are cached.

    A slice ``w[:out, :in]`` is a *view* of the weight, so it always shows the weight's current
    values (in-place writes, also through ``p.data`` as EMA, SWA or pruning do) and keeps its
    memory format. The cache saves the Python cost of slicing. It is checked against the
    parameters' storage: a parameter given new storage (``p.data = t``, a new ``Parameter``) is
    sliced afresh (the cached view keeps the old storage alive, so its address is not reused).
    A cached contiguous *copy* saved the conv kernels copying strided slices (~5 % of a batch-1
    forward of US-MobileNet v2, docs/benchmarks.md) but went stale on ``p.data`` writes, which
    leave no trace on the parameter. Training always slices afresh.
    """

    def _slice(self, param: Tensor, out: int, inp: int | None) -> Tensor:
        """``param``'s slice of ``out`` outputs and ``inp`` inputs (None: all of its inputs)."""
        if self.training or torch.is_grad_enabled():
            return _cut(param, out, inp)
        cache: dict[tuple[int, int, int | None], Tensor] = self.__dict__.setdefault(
            "_slice_cache", {}
        )
        key = (id(param), out, inp)
        hit = cache.get(key)
        if hit is not None and hit.data_ptr() == param.data_ptr():
            return hit
        if len(cache) > 64:
            cache.clear()
        cache[key] = sliced = _cut(param, out, inp)
        return sliced

    def _weight_and_bias(self, out: int, inp: int | None) -> tuple[Tensor, Tensor | None]:
        """``_slice`` of the weight and the bias in one cache lookup (the hot path of eval)."""
        weight, bias = cast(Tensor, self.weight), cast("Tensor | None", self.bias)
        if self.training or torch.is_grad_enabled():
            return _cut(weight, out, inp), None if bias is None else _cut(bias, out, None)
        cache: dict = self.__dict__.setdefault("_slice_cache", {})
        hit = cache.get((out, inp))
        # the views keep the storage they were cut from alive: equal addresses, same storage
        if (
            hit is not None
            and hit[2] == weight.data_ptr()
            and (bias is None or hit[3] == bias.data_ptr())
        ):
            return hit[0], hit[1]
        if len(cache) > 64:
            cache.clear()
        b = None if bias is None else _cut(bias, out, None)
        cache[(out, inp)] = hit = (
            _cut(weight, out, inp),
            b,
            weight.data_ptr(),
            None if bias is None else bias.data_ptr(),
        )
        return hit[0], hit[1]

    def _apply(self, fn, *args, **kwargs):  # noqa: ANN001, ANN202
        self.__dict__.pop("_slice_cache", None)  # views of the old tensors
        return super()._apply(fn, *args, **kwargs)

    def __setstate__(self, state: dict) -> None:  # deepcopy: the copy has its own weights
        super().__setstate__(state)
        self.__dict__.pop("_slice_cache", None)


class USConv2d(_Sliced, nn.Conv2d):
    """A ``Conv2d`` whose in/out channels follow channel groups.

    ``depthwise=True`` makes a depthwise conv (``groups`` = active channels; in and out share one
    group). Plain ints mean channels that never slim (e.g. the input image's).
    """

    def __init__(
        self,
        in_channels: int | GroupRef,
        out_channels: int | GroupRef,
        kernel_size: int,
        stride: int = 1,
        padding: int | None = None,
        depthwise: bool = False,
        bias: bool = False,
        dilation: int = 1,
    ) -> None:
        self.in_ref, self.out_ref = as_ref(in_channels), as_ref(out_channels)
        if depthwise and (
            self.in_ref.space is not self.out_ref.space
            or self.in_ref.index != self.out_ref.index
            or self.in_ref.full != self.out_ref.full
        ):
            raise UsageError(
                f"a depthwise USConv2d needs one channel group for in and out, got "
                f"{self.in_ref} and {self.out_ref}"
            )
        if padding is None:
            padding = dilation * (kernel_size - 1) // 2
        super().__init__(
            self.in_ref.full,
            self.out_ref.full,
            kernel_size,
            stride,
            padding,
            dilation=dilation,
            groups=self.in_ref.full if depthwise else 1,
            bias=bias,
        )
        self.depthwise = depthwise

    def forward(self, x: Tensor) -> Tensor:
        cout = self.out_ref.active
        if self.depthwise:
            weight, bias = self._weight_and_bias(cout, None)
            return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, cout)
        weight, bias = self._weight_and_bias(cout, self.in_ref.active)
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation)

    def extra_repr(self) -> str:
        return f"{self.in_ref} -> {self.out_ref}, " + super().extra_repr()

    @torch.no_grad()
    def to_dense(self, stats: bool = True) -> nn.Conv2d:
        """The plain ``nn.Conv2d`` of the current width (the export hook; weights copied)."""
        cin, cout = self.in_ref.active, self.out_ref.active
        conv = nn.Conv2d(
            cin,
            cout,
            cast(_Pair, self.kernel_size),
            cast(_Pair, self.stride),
            cast("_Pair | str", self.padding),
            cast(_Pair, self.dilation),
            cout if self.depthwise else 1,
            bias=self.bias is not None,
            device=self.weight.device,
            dtype=self.weight.dtype,
        )
        conv.weight = dense_param(self.weight[:cout] if self.depthwise else self.weight[:cout, :cin])
        if self.bias is not None:
            conv.bias = dense_param(self.bias[:cout])
        return conv


class USLinear(_Sliced, nn.Linear):
    """A ``Linear`` whose in/out features follow channel groups."""

    def __init__(
        self, in_features: int | GroupRef, out_features: int | GroupRef, bias: bool = True
    ) -> None:
        self.in_ref, self.out_ref = as_ref(in_features), as_ref(out_features)
        super().__init__(self.in_ref.full, self.out_ref.full, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, *self._weight_and_bias(self.out_ref.active, self.in_ref.active))

    def extra_repr(self) -> str:
        return f"{self.in_ref} -> {self.out_ref}, bias={self.bias is not None}"

    @torch.no_grad()
    def to_dense(self, stats: bool = True) -> nn.Linear:
        """The plain ``nn.Linear`` of the current width (the export hook; weights copied)."""
        cin, cout = self.in_ref.active, self.out_ref.active
        linear = nn.Linear(
            cin, cout, bias=self.bias is not None, device=self.weight.device, dtype=self.weight.dtype
        )
        linear.weight = dense_param(self.weight[:cout, :cin])
        if self.bias is not None:
            linear.bias = dense_param(self.bias[:cout])
        return linear


class Residual(nn.Module):
    """``x + body(x)``: the one block standard torch lacks (dense form of residual blocks)."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def dense_param(t: Tensor) -> nn.Parameter:
    """A parameter of a dense export: a copy of ``t`` (a slice must not alias the US weights)."""
    return nn.Parameter(t.detach().clone(), requires_grad=t.requires_grad)


def init_weights(model: nn.Module) -> None:
    """The authors' init: conv N(0, sqrt(2 / (k*k*C_out))), BN 1/0, linear N(0, 0.01), biases 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._NormBase) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
