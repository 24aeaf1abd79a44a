"""Width control of a model: the functions users call (``usnet.width``, ``usnet.set_width``, ...).

They find the model's :class:`~usnet.nn.space.WidthSpace` through torch.compile, DDP and other
wrappers and act on it; the semantics (a per-call width in a ContextVar, a model default) are
the space's.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from torch import nn

from ..errors import UsageError
from .groups import ChannelGroup
from .sliced import Sliced
from .space import Width, WidthConfig, WidthSpace


def unwrap_model(model: nn.Module) -> nn.Module:
    """The US model itself, inside torch.compile (``._orig_mod``) and DDP (``.module``) wrappers.

    The wrappers are peeled first: attribute lookups on torch.compile's wrapper fall through to
    the inner module, so "has a width space" alone would return the wrapper itself.
    """
    for _ in range(8):
        inner = _wrapped(model)
        if inner is None:
            if isinstance(getattr(model, "width_space", None), WidthSpace):
                return model
            inner = getattr(model, "module", None)  # other wrappers, e.g. an EMA copy
            if not isinstance(inner, nn.Module):
                break
        model = inner
    raise TypeError(f"{type(model).__name__} is not a US model: it has no width_space")


def _wrapped(model: nn.Module) -> nn.Module | None:
    """The module inside a torch.compile, DistributedDataParallel or DataParallel wrapper."""
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        return model.module
    # No import of torch._dynamo (slow): if it was never imported, nothing was compiled.
    dynamo = sys.modules.get("torch._dynamo.eval_frame")
    if dynamo is not None and isinstance(model, dynamo.OptimizedModule):
        return model._orig_mod
    return None


def width_space(model: nn.Module) -> WidthSpace:
    """The :class:`WidthSpace` of a US model (also through DDP / torch.compile wrappers)."""
    space = unwrap_model(model).width_space
    assert isinstance(space, WidthSpace)  # unwrap_model checked it
    return space


def set_width(model: nn.Module, width: WidthConfig) -> None:
    """Run ``model`` at ``width`` from now on (uniform float or ``{group: width}``): its default,
    for every call outside a :func:`width` block, in every thread.

    Layers read the default as they run, so set it before serving, not while another thread is
    inside a call at the default (that call would mix two networks and fail); per-request
    widths belong in :func:`width` blocks."""
    width_space(model).set(width)


def get_width(model: nn.Module) -> Width:
    """The width config of the current call (canonical form): the innermost :func:`width` block
    of this thread or task, else the model's default."""
    return width_space(model).config


@contextlib.contextmanager
def width(model: nn.Module, w: WidthConfig) -> Iterator[nn.Module]:
    """``with usnet.width(model, 0.5): y = model(x)`` runs the block's calls at 0.5.

    The width holds for the current thread or asyncio task only (other threads keep theirs, and
    the model's default from :func:`set_width` is untouched), so one model serves requests at
    different widths from several threads at once.
    """
    with width_space(model).at(w):
        yield model


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """``with usnet.frozen(model): serve()``: eval calls inside keep each width's active
    tensors as contiguous tensors, unchecked, so a width runs as fast as its dense export.

    The promise, as ``torch.nn.utils.parametrize.cached()`` asks of its block: no parameter or
    buffer of the model changes inside it (outside it, eval keeps views, which see every
    change). It is checked when the last open block ends: if a layer's tensors changed
    (in-place, new storage, replaced), it raises :class:`~usnet.errors.UsageError` naming the
    layer, since calls after the change used the old values. Widths still vary per call
    (:func:`width` blocks, several threads); each width run keeps a copy of its active weights
    until the block ends (at most 17 networks per layer). Training and autograd calls inside
    the block compute afresh, as outside it.
    """
    space = width_space(model)
    try:
        with space.frozen():
            yield model
    finally:  # the last block to end drops the tensors, also when the block raised
        stale = [] if space.freezes else _thaw(model)
    if stale:
        raise UsageError(
            f"usnet.frozen: {len(stale)} layer(s) changed inside the frozen block (first: "
            f"{stale[0]!r}); any eval call after the change used the old tensors. Change "
            "weights outside usnet.frozen(model), or re-run those calls after the block"
        )


def _thaw(model: nn.Module) -> list[str]:
    """Drop every layer's frozen tensors; the names of layers whose tensors changed."""
    modules = unwrap_model(model).named_modules()
    return [name for name, m in modules if isinstance(m, Sliced) and not m.thaw()]


@contextlib.contextmanager
def modes_kept(model: nn.Module) -> Iterator[nn.Module]:
    """Restore every module's own train/eval mode after the block (``model.train(b)`` inside
    sets them all alike; some modules may have had another mode before)."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def channel_groups(model: nn.Module) -> list[ChannelGroup]:
    """The model's channel groups with their full sizes, in build order."""
    return list(width_space(model).groups)
