"""Plain multi-head self-attention of fixed heads: ``nn.MultiheadAttention``'s computation
(boolean and additive masks, ``need_weights``) over q, k and v already split into heads, and the
dense module a slimmable attention exports to where ``nn.MultiheadAttention`` cannot hold its
narrower config (an embedding wider or narrower than its heads). Nothing here slims."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MultiheadSelfAttention(nn.Module):
    """The dense form of a :class:`USMultiheadAttention` whose embedding differs from its heads'
    width (which ``nn.MultiheadAttention`` cannot hold): plain ``in_proj``/``out_proj`` linears
    and :func:`attention`, with ``nn.MultiheadAttention``'s call signature (self-attention)."""

    in_proj: nn.Linear
    out_proj: nn.Linear

    def __init__(
        self, num_heads: int, head_dim: int, scale: float, dropout: float, batch_first: bool
    ) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.scale = num_heads, head_dim, scale
        self.dropout, self.batch_first = dropout, batch_first

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        x = query if self.batch_first else query.transpose(0, 1)
        b, n = x.shape[0], x.shape[1]
        qkv = self.in_proj(x).view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        out, weights = attention(
            qkv[0], qkv[1], qkv[2], attn_mask, key_padding_mask, is_causal, self.scale, p,
            need_weights, average_attn_weights,
        )
        out = self.out_proj(out)
        return (out if self.batch_first else out.transpose(0, 1)), weights


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_mask: Tensor | None,
    key_padding_mask: Tensor | None,
    is_causal: bool,
    scale: float,
    dropout: float,
    need_weights: bool,
    average_weights: bool,
) -> tuple[Tensor, Tensor | None]:
    """``nn.MultiheadAttention``'s attention of ``(B, heads, N, head_dim)`` q, k, v: output
    ``(B, N, heads * head_dim)`` and, with ``need_weights``, the attention weights (averaged
    over heads with ``average_weights``). Boolean masks are True where attention is *not*
    allowed, as MultiheadAttention's; float masks are added."""
    mask = _merge_masks(attn_mask, key_padding_mask, q)
    if not need_weights:
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=is_causal and mask is None,
            scale=scale,
        )
        return out.transpose(1, 2).flatten(2), None
    scores = (q @ k.transpose(-2, -1)) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    elif is_causal:
        n = scores.shape[-1]
        allowed = torch.ones(n, n, dtype=torch.bool, device=scores.device).tril()
        scores = scores.masked_fill(~allowed, float("-inf"))
    weights = scores.softmax(-1)
    out = (F.dropout(weights, dropout, dropout > 0) @ v).transpose(1, 2).flatten(2)
    return out, weights.mean(1) if average_weights else weights


def _merge_masks(attn_mask: Tensor | None, key_padding_mask: Tensor | None, q: Tensor) -> Tensor | None:
    """One mask for sdpa (True / additive = attend) from MultiheadAttention's two (True = ignore
    for boolean masks)."""
    masks = []
    for m, shape in ((attn_mask, None), (key_padding_mask, (q.shape[0], 1, 1, -1))):
        if m is None:
            continue
        m = m if shape is None else m.view(shape)
        masks.append(~m if m.dtype == torch.bool else m)
    if not masks:
        return None
    if len(masks) == 1:
        return masks[0]
    a, b = masks
    if a.dtype == torch.bool and b.dtype == torch.bool:
        return a & b
    as_float = [
        torch.zeros_like(m, dtype=q.dtype).masked_fill(~m, float("-inf")) if m.dtype == torch.bool else m
        for m in masks
    ]
    return as_float[0] + as_float[1]
