"""The slimmable token embedding: the leading channels of every token's vector.

A width keeps the first ``e`` of the ``embedding_dim`` channels of each row, a column slice of
the weight (a view), so a narrower network looks up the same rows and reads fewer channels, as a
dense ``nn.Embedding`` of ``e`` channels holding those columns would.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UsageError
from .groups import Counts, Span
from .shared_grad import narrow
from .sliced import Sliced, current, dense_param, space_of


class USEmbedding(Sliced, nn.Embedding):
    """``nn.Embedding`` whose channels follow a span of a channel group (built by
    :meth:`from_module`, which keeps the weight)."""

    def __init__(self, num_embeddings: int, span: Span, **kwargs: Any) -> None:
        super().__init__(num_embeddings, span.full, **kwargs)
        if not span.prefix:
            raise UsageError(f"an embedding's channels must be one channel group, got {span!r}")
        self.span = span
        self.space = space_of(span)

    @classmethod
    def from_module(cls, embedding: nn.Embedding, span: Span) -> USEmbedding:
        """The slimmable form of ``embedding`` (its weight kept, not copied)."""
        if embedding.max_norm is not None:
            raise UsageError(
                "an nn.Embedding with max_norm renormalises every row over all its channels, "
                "which a narrower width cannot reproduce"
            )
        layer = cls(
            embedding.num_embeddings,
            span,
            padding_idx=embedding.padding_idx,
            scale_grad_by_freq=embedding.scale_grad_by_freq,
            sparse=embedding.sparse,
            device="meta",
        )
        layer.weight = embedding.weight
        return layer

    _names = ("weight",)

    def _sources(self) -> tuple[Tensor | None, ...]:
        return (self.weight,)

    def _compute(self, counts: Counts, key: str) -> Tensor:
        e = self.span.count(counts)
        return narrow(self.weight, self.weight.shape[0], e)

    def forward(self, x: Tensor) -> Tensor:
        return F.embedding(
            x, self._current(), self.padding_idx, None, 2.0, self.scale_grad_by_freq, self.sparse
        )

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.span}"

    @torch.no_grad()
    def to_dense(self, stats: bool = True) -> nn.Embedding:
        """The plain ``nn.Embedding`` of the current width (weights copied)."""
        weight = self._compute(*current(self.space))
        dense = nn.Embedding(
            weight.shape[0],
            weight.shape[1],
            self.padding_idx,
            scale_grad_by_freq=self.scale_grad_by_freq,
            sparse=self.sparse,
            device="meta",
        )
        dense.weight = dense_param(weight)
        return dense
