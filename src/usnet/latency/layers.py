"""The layers a width runs, each named by what its time depends on (a lookup table's key).

A width's network is its dense export (:func:`usnet.export.extract`): plain torch layers. Each
leaf layer's key is its type, its description (``extra_repr``: channels, kernel, stride,
groups...), its parameters' shapes and its input's shape, so the key names the computation
whatever model or width it came from: two widths, or two models, that run the same layer share
its measured time. Work outside leaf layers (a residual add, a flatten in ``forward``) has no
key; the latency model's fitted intercept absorbs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..export import extract
from ..nn import WidthConfig
from ..shapes import input_shape


@dataclass(frozen=True)
class Layer:
    """One leaf layer of a width's dense network and the input it gets."""

    key: str
    kind: str
    module: nn.Module
    shape: tuple[int, ...]


def _key(module: nn.Module, shape: tuple[int, ...]) -> str:
    params = ",".join("x".join(map(str, p.shape)) for p in module.parameters(recurse=False))
    return f"{type(module).__name__}({module.extra_repr()})[{params}]<-{'x'.join(map(str, shape))}"


def dense_network(model: nn.Module, width: WidthConfig | None) -> nn.Module:
    """The dense network ``width`` selects (no BN statistics: timing does not read them)."""
    return extract(model, width, stats=False)


def layers(model: nn.Module, width: WidthConfig | None, batch_size: int = 1) -> list[Layer]:
    """The leaf layers a forward of ``batch_size`` inputs runs at ``width`` (``None``: ``model``
    is dense already), in the order they run, each with its key and input shape."""
    dense = model if width is None else dense_network(model, width)
    found: list[Layer] = []

    def record(module: nn.Module, args: tuple[Any, ...]) -> None:
        x = args[0] if args else None
        if isinstance(x, torch.Tensor):
            shape = tuple(x.shape)
            found.append(Layer(_key(module, shape), type(module).__name__, module, shape))

    leaves = [m for m in dense.modules() if not list(m.children())]
    hooks = [m.register_forward_pre_hook(record) for m in leaves]
    p = next(dense.parameters())
    try:
        x = torch.zeros(batch_size, *input_shape(model), dtype=p.dtype, device=p.device)
        with torch.inference_mode():
            dense.eval()(x)
    finally:
        for h in hooks:
            h.remove()
    return found
