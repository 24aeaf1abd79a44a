"""Per-channel parameters of a slimmable channel group outside the layers (ConvNeXt's layer scale,
a class token's or position embedding's channels, PReLU's slopes): read at the active width.

They are sliced by a ``torch.nn.utils.parametrize`` parametrization, so the module that owns
them keeps its class and its ``forward``; the export hook leaves a plain copy of the slice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..errors import UsageError
from .groups import Counts, Span
from .sliced import Sliced, dense_param
from .space import WidthSpace


class SliceChannels(Sliced):
    """A parametrization: a per-channel parameter at the active width of ``span`` along ``dim``.

    Read through :func:`slice_parameter`'s property, it is a :class:`Sliced` layer whose one
    tensor is its parametrization list's ``original``: eval reads are cached and frozen as every
    layer's. Through parametrize's own machinery (two module calls and a failed attribute
    lookup per read), a ViT's class token and position embedding cost 2-3 % of a batch-1
    forward.
    """

    _names = ("original",)
    space: WidthSpace

    def __init__(self, span: Span, dim: int) -> None:
        super().__init__()
        if not isinstance(span.space, WidthSpace):
            raise UsageError("SliceChannels needs a span with a slimmable channel group")
        self.span, self.dim = span, dim
        self.space = span.space
        self._views = span.prefix

    def _owner(self) -> nn.Module:
        return self.__dict__["_list"]  # the ParametrizationList holding it (not a child)

    def _original(self) -> Tensor:
        original: Tensor = self._owner().original  # type: ignore[assignment]
        return original

    def _sources(self) -> tuple[Tensor | None, ...]:
        return (self._original(),)

    def _watched(self) -> list[Tensor]:
        return [self._original()]

    def _compute(self, counts: Counts, key: str) -> Tensor:
        return self._slice(self._original(), counts)

    def _slice(self, x: Tensor, counts: Counts) -> Tensor:
        out = self.span.take(x, self.dim, counts)
        # detached under no_grad: a parameter's view made there still says requires_grad but
        # has no gradient function, on which torch's module tracker (FlopCounterMode) fails
        return out if torch.is_grad_enabled() else out.detach()

    def forward(self, x: Tensor) -> Tensor:
        return self._slice(x, self.space.counts())


def slice_parameter(module: nn.Module, name: str, span: Span, dim: int) -> None:
    """Make ``module.<name>`` read as its active channels (``torch.nn.utils.parametrize``), and
    give the module the export hook that leaves the sliced copy behind.

    The property parametrize made is replaced by one that asks the :class:`SliceChannels`
    directly while it is the name's only parametrization and parametrize's own cache is off
    (else parametrize's getter runs, as before)."""
    slicer = SliceChannels(span, dim)
    parametrize.register_parametrization(module, name, slicer, unsafe=True)
    plist: Any = module.parametrizations[name]  # type: ignore[index]
    slicer.__dict__["_list"] = plist
    cls: Any = type(module)  # the class parametrize made for this module alone
    cls.to_dense = _dense_parametrized
    prop = getattr(cls, name)
    setattr(cls, name, property(_direct_read(name, prop.fget), prop.fset))


def _direct_read(name: str, slow: Callable[[nn.Module], Tensor]) -> Callable[[nn.Module], Tensor]:
    """The getter of a sliced parameter ``name`` (``slow``: parametrize's own)."""

    def read(self: nn.Module) -> Tensor:
        plist = self._modules["parametrizations"]._modules[name]  # type: ignore[union-attr]
        first = plist._modules.get("0")  # type: ignore[union-attr]
        if (
            isinstance(first, SliceChannels)
            and len(plist._modules) == 1  # type: ignore[union-attr]
            and not parametrize._cache_enabled
        ):
            return first._current()
        return slow(self)

    return read


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
    base = type(self).__bases__[0]  # the class parametrize derived this one from
    self.__class__ = base
    for name, value in slices.items():
        if kinds[name]:
            setattr(self, name, dense_param(value))
        else:
            self.register_buffer(name, value)
    own = getattr(base, "to_dense", None)  # the class's own dense form (an adapted class's)
    return own(self, stats) if callable(own) else self
