"""Per-channel parameters of a slimmable channel group outside the layers (ConvNeXt's layer scale,
a class token's or position embedding's channels, PReLU's slopes): read at the active width.

They are sliced by a ``torch.nn.utils.parametrize`` parametrization, so the module that owns
them keeps its class and its ``forward``; the export hook leaves a plain copy of the slice.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..errors import UsageError
from .groups import Span
from .sliced import dense_param


class SliceChannels(nn.Module):
    """A parametrization: a per-channel parameter at the active width of ``span`` along ``dim``."""

    def __init__(self, span: Span, dim: int) -> None:
        super().__init__()
        if span.space is None:
            raise UsageError("SliceChannels needs a span with a slimmable channel group")
        self.span, self.dim = span, dim

    def forward(self, x: Tensor) -> Tensor:
        space = self.span.space
        assert space is not None  # checked at construction
        out = self.span.take(x, self.dim, space.counts())
        # detached under no_grad: a parameter's view made there still says requires_grad but
        # has no gradient function, on which torch's module tracker (FlopCounterMode) fails
        return out if torch.is_grad_enabled() else out.detach()


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
    base = type(self).__bases__[0]  # the class parametrize derived this one from
    self.__class__ = base
    for name, value in slices.items():
        if kinds[name]:
            setattr(self, name, dense_param(value))
        else:
            self.register_buffer(name, value)
    own = getattr(base, "to_dense", None)  # the class's own dense form (an adapted class's)
    return own(self, stats) if callable(own) else self
