"""The slimmable linear layer (inputs and outputs on the last dimension)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .groups import Counts, Span, as_span
from .shared_grad import narrow
from .sliced import Sliced, current, dense_param, space_of


class USLinear(Sliced, nn.Linear):
    """A ``Linear`` whose in/out features follow spans of channel groups.

    Built directly (``USLinear(in_group, num_classes)``; ints never slim) or from an existing
    linear by :meth:`from_module`, which keeps its parameters. Input spans may have factors
    (features flattened channel-major) or several segments (a concatenation); output spans may
    have several segments too (a fused q/k/v projection).
    """

    def __init__(
        self,
        in_features: int | Span,
        out_features: int | Span,
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        in_span, out_span = as_span(in_features), as_span(out_features)
        super().__init__(in_span.full, out_span.full, bias, device, dtype)
        self.in_span, self.out_span = in_span, out_span
        self.space = space_of(in_span, out_span)
        self._views = in_span.prefix and out_span.prefix

    @classmethod
    def from_module(cls, linear: nn.Linear, inp: Span | None, out: Span | None) -> USLinear:
        """The slimmable form of ``linear`` (its parameters kept, not copied)."""
        layer = cls(
            inp if inp is not None else linear.in_features,
            out if out is not None else linear.out_features,
            linear.bias is not None,
            device="meta",
        )
        layer.weight, layer.bias = linear.weight, linear.bias
        return layer

    _names = ("weight", "bias")

    def _sources(self) -> tuple[Tensor | None, ...]:
        return self.weight, self.bias

    def _compute(self, counts: Counts, key: str) -> tuple[Tensor, Tensor | None]:
        inp, out = self.in_span, self.out_span
        if inp.prefix and out.prefix:
            weight = narrow(self.weight, out.count(counts), inp.count(counts))
        else:
            weight = inp.take(out.take(self.weight, 0, counts), 1, counts)
        bias: Tensor | None = self.bias
        if bias is not None:
            bias = narrow(bias, out.count(counts)) if out.prefix else out.take(bias, 0, counts)
        return weight, bias

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, *self._current())

    def extra_repr(self) -> str:
        return f"{self.in_span} -> {self.out_span}, bias={self.bias is not None}"

    @torch.no_grad()
    def to_dense(self, stats: bool = True) -> nn.Linear:
        """The plain ``nn.Linear`` of the current width (the export hook; weights copied)."""
        weight, bias = self._compute(*current(self.space))
        linear = nn.Linear(weight.shape[1], weight.shape[0], bias is not None, "meta", weight.dtype)
        linear.weight = dense_param(weight)
        if bias is not None:
            linear.bias = dense_param(bias)
        return linear
