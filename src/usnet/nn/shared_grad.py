"""One full-size gradient per parameter per sandwich step, however many widths the step trains.

Autograd's backward of a slice ``w[:out, :in]`` writes the slice's gradient into a new
full-size zero tensor, which ``AccumulateGrad`` then adds into ``w.grad``: per width, a full
zero-fill and a full addition, where the width touched only its slice. Inside
:func:`shared_gradients` (the sandwich step), a sliced parameter instead gets one buffer per
step, handed to autograd once, on the step's last width. Earlier widths give the parameter no
gradient at all, so ``.grad``, gradient hooks and DDP's reduction see exactly one full gradient
per step, at the last backward (the one DDP synchronises; the others run under ``no_sync``).

An earlier width's slice is a *leaf*: a view of the parameter's values with its own
``requires_grad``, whose gradient autograd's C++ ``AccumulateGrad`` receives with no Python
in the backward pass (the full width's gradient is kept as the buffer itself, without a copy).
When the next width starts (:meth:`_Buffers.begin`), those gradients are added into the buffer
and freed. Leaves and buffer views are cut with one ``as_strided`` each, not a ``narrow`` per
dimension (a third of the cost; no autograd is involved). Only the last width goes through a
Python :class:`torch.autograd.Function`, whose backward adds its slice and returns the buffer as
the parameter's gradient: a quarter of the Python calls of a four-width step.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor


def _narrowed(t: Tensor, sizes: tuple[int, ...]) -> Tensor:
    """``t[:sizes[0], :sizes[1], ...]`` (a view; ``t`` itself where nothing is cut)."""
    for dim, n in enumerate(sizes):
        if n != t.shape[dim]:
            t = t.narrow(dim, 0, n)
    return t


def _prefix(t: Tensor, shape: tuple[int, ...]) -> Tensor:
    """The leading ``shape`` block of ``t`` (no autograd): one ``as_strided`` with ``t``'s own
    strides, a third of the cost of a ``narrow`` per dimension."""
    return t if shape == t.shape else t.as_strided(shape, t.stride())


class _Shared:
    """One sliced parameter's gradient over a step: the buffer, and the leaves of earlier widths
    whose gradients are not yet in it."""

    __slots__ = ("param", "values", "grad", "leaves", "handed")

    def __init__(self, param: Tensor) -> None:
        self.param = param
        self.values = param.detach()  # what the leaves view
        self.grad: Tensor | None = None
        self.leaves: list[Tensor] = []
        self.handed = False  # the buffer went to autograd (the last width's backward)

    def settle(self) -> Tensor | None:
        """The buffer, with the gradients the leaves received since the last call added in.

        A leaf stays listed (its ``.grad`` reset) so that a gradient it receives later, from a
        backward still to run, is added in too."""
        for leaf in self.leaves:
            g = leaf.grad
            if g is None:
                continue
            leaf.grad = None
            if self.grad is None:
                if g.shape == self.param.shape:  # the full width's gradient: the buffer itself
                    self.grad = g
                    continue
                self.grad = torch.zeros_like(self.param)
            _prefix(self.grad, g.shape).add_(g)
        return self.grad


class _Buffers:
    """The gradient buffers of one step, and whether its current width is the last."""

    def __init__(self) -> None:
        self.params: dict[int, _Shared] = {}  # by id(param)
        self.last = False

    def begin(self, last: bool) -> None:
        """Start a width (``last``: the step's last): the earlier widths' gradients go into the
        buffers now, so that their slices' gradients are freed before this width's forward
        allocates its activations."""
        for shared in self.params.values():
            if shared.leaves:
                shared.settle()
        self.last = last

    def flush(self) -> None:
        """Gradients of parameters the last width did not use go to ``.grad`` directly."""
        with torch.no_grad():
            for shared in self.params.values():
                grad = None if shared.handed else shared.settle()
                if grad is not None:
                    param = shared.param
                    param.grad = grad if param.grad is None else param.grad + grad
                shared.leaves.clear()
        self.params.clear()


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
    """The last width's slice of a parameter (the leading ``shape`` block); backward adds it
    into the step's buffer and returns the buffer (once per parameter and step)."""

    @staticmethod
    def forward(ctx: Any, param: Tensor, shared: _Shared, shape: tuple[int, ...]) -> Tensor:
        ctx.shared = shared
        return param.as_strided(shape, param.stride())

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None]:
        shared: _Shared = ctx.shared
        param = shared.param
        if shared.handed:  # a second use of the parameter: autograd adds the two
            extra = torch.zeros_like(param)
            _prefix(extra, grad.shape).add_(grad)
            return extra, None, None
        full = shared.settle()
        if full is None:
            if grad.shape == param.shape:
                full = grad.clone(memory_format=torch.preserve_format)
            else:
                full = torch.zeros_like(param)
                _prefix(full, grad.shape).add_(grad)
        else:
            _prefix(full, grad.shape).add_(grad)
        shared.grad, shared.handed = None, True  # autograd's now: it may keep it as .grad
        return full, None, None


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
    ):
        return _narrowed(param, sizes)
    shared = buffers.params.get(id(param))
    if shared is None:
        shared = buffers.params[id(param)] = _Shared(param)
    elif shared.handed:  # a forward after the buffer was handed over: plain autograd
        return _narrowed(param, sizes)
    if shared.leaves:
        shared.settle()  # earlier widths' gradients into the buffer (their backward has run)
    if buffers.last:
        return _Narrow.apply(param, shared, sizes + param.shape[len(sizes) :])
    values = shared.values
    leaf = values.as_strided(sizes + values.shape[len(sizes) :], values.stride())
    shared.leaves.append(leaf.requires_grad_())
    return leaf
