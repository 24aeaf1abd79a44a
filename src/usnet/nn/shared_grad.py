"""One full-size gradient per parameter per sandwich step, however many widths the step trains.

Autograd's backward of a slice ``w[:out, :in]`` writes the slice's gradient into a new
full-size zero tensor, which ``AccumulateGrad`` then adds into ``w.grad``: per width, a full
zero-fill and a full addition, where the width touched only its slice. Inside
:func:`shared_gradients` (the sandwich step), a sliced parameter's backward instead adds its
slice into one buffer per parameter and step, and hands that buffer to autograd once, on the
step's last width. Earlier widths give the parameter no gradient at all, so ``.grad``, gradient
hooks and DDP's reduction see exactly one full gradient per step, at the last backward (the one
DDP synchronises; the others run under ``no_sync``).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor


class _Buffers:
    """The gradient buffers of one step, and whether its current width is the last."""

    def __init__(self) -> None:
        self.grads: dict[int, tuple[Tensor, Tensor]] = {}  # id(param) -> (param, gradient)
        self.handed: set[int] = set()
        self.last = False

    def flush(self) -> None:
        """Gradients of parameters the last width did not use go to ``.grad`` directly."""
        with torch.no_grad():
            for key, (param, grad) in self.grads.items():
                if key not in self.handed:
                    param.grad = grad if param.grad is None else param.grad + grad
        self.grads.clear()


_STEP: contextvars.ContextVar[_Buffers | None] = contextvars.ContextVar(
    "usnet_shared_gradients", default=None
)


@contextlib.contextmanager
def shared_gradients() -> Iterator[_Buffers]:
    """Sliced parameters of the block's forward passes share one gradient buffer each; set
    ``.last = True`` before the last width's forward, whose backward hands the buffers over."""
    buffers = _Buffers()
    token = _STEP.set(buffers)
    try:
        yield buffers
    finally:
        _STEP.reset(token)
    buffers.flush()


class _Narrow(torch.autograd.Function):
    """``param`` narrowed to ``sizes`` on its leading dimensions; backward adds into the step's
    buffer and returns it (on the last width) or nothing."""

    @staticmethod
    def forward(ctx: Any, param: Tensor, buffers: _Buffers, sizes: tuple[int, ...]) -> Tensor:
        ctx.buffers, ctx.sizes, ctx.last, ctx.param = buffers, sizes, buffers.last, param
        out = param
        for dim, n in enumerate(sizes):
            out = out.narrow(dim, 0, n)
        return out.view_as(out)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None]:
        buffers: _Buffers = ctx.buffers
        param: Tensor = ctx.param
        key = id(param)
        entry = buffers.grads.get(key)
        if entry is None and grad.shape == param.shape:  # the full width: its gradient
            full = grad.clone(memory_format=torch.preserve_format)
        else:
            full = torch.zeros_like(param) if entry is None else entry[1]
            target = full
            for dim, n in enumerate(ctx.sizes):
                target = target.narrow(dim, 0, n)
            target.add_(grad)
        buffers.grads[key] = (param, full)
        if ctx.last and key not in buffers.handed:
            buffers.handed.add(key)
            return full, None, None
        return None, None, None


def narrow(param: Tensor, *sizes: int) -> Tensor:
    """``param[:sizes[0], :sizes[1], ...]``: a plain view, or (training inside
    :func:`shared_gradients`, a leaf parameter whose gradient is wanted) one whose gradient
    goes to the step's shared buffer."""
    buffers = _STEP.get()
    if (
        buffers is None
        or not param.requires_grad
        or not param.is_leaf
        or not torch.is_grad_enabled()
        or torch.compiler.is_compiling()
        or id(param) in buffers.handed
    ):
        out = param
        for dim, n in enumerate(sizes):
            if n != out.shape[dim]:
                out = out.narrow(dim, 0, n)
        return out
    return _Narrow.apply(param, buffers, tuple(sizes))
