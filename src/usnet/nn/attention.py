"""Slimmable multi-head self-attention: whole heads slim, head_dim stays.

A width keeps the first ``k`` of ``H`` heads (a channel group counted in heads) and the active
embedding channels of the input and output spans. q, k and v each keep their first ``k`` heads
(a fused ``qkv`` weight is three segments of ``H x head_dim`` rows), the output projection reads
the kept heads; ``head_dim`` does not change, so neither does the softmax scale. The fused
weight is read through a strided view ``(3, H * head_dim, E)[:, :k * head_dim, :e]`` and one
batched matmul, so no width copies it.

:class:`USAttention` has timm's ``Attention`` interface (``forward(x, attn_mask, is_causal)``,
parameters ``qkv.*``, ``proj.*``); :class:`USMultiheadAttention` has ``nn.MultiheadAttention``'s
(``forward(query, key, value, ...)`` returning ``(output, weights)``, parameters
``in_proj_*``, ``out_proj.*``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UsageError
from .dense_attention import MultiheadSelfAttention, attention
from .groups import Span, as_span
from .linear import USLinear
from .sliced import Sliced, dense_param, space_of
from .space import WidthSpace


def unsupported(attn: Any) -> str:
    """Why a timm ``Attention`` or ``nn.MultiheadAttention`` has no slimmable form (``""``: it
    has one): the parts whose channels are neither heads nor the embedding."""
    if isinstance(attn, nn.MultiheadAttention):
        if not attn._qkv_same_embed_dim:
            return "its keys or values have their own width (kdim/vdim != embed_dim)"
        if attn.bias_k is not None or attn.add_zero_attn:
            return "add_bias_kv and add_zero_attn add a key of full width"
        return ""
    if getattr(attn, "gate", None) is not None:
        return "a gated attention's gate is not supported"
    if not isinstance(getattr(attn, "norm", nn.Identity()), nn.Identity):
        return "scale_norm (a norm over all heads' outputs) is not supported"
    return ""


def _heads_span(heads: Span, head_dim: int) -> Span:
    """The kept heads' ``head_dim`` channels each: what the output projection reads."""
    if heads.fixed:
        return as_span(heads.full * head_dim)
    return Span([(heads, head_dim)])


class _HeadsCore(Sliced):
    """What both interfaces share: the fused input projection and the attention of the kept
    heads. Subclasses own ``proj`` (a :class:`USLinear` from the heads to the output span).

    Its active tensors are views of the fused weight (cached in eval as every
    :class:`Sliced` layer's): all heads run through one ``F.linear`` of ``w[:, :e]``, fewer
    through one batched product of the strided ``(3, a, e)`` view of q, k and v's first
    rows: no copy per call, and nothing to go stale in a cache. Gathering the kept rows into one
    weight per call for one ``F.linear`` was slower at batch 1 and 32 (the whole network,
    before and after: docs/benchmarks_vit.md)."""

    space: WidthSpace
    proj: USLinear
    qkv: nn.Linear  # the fused projection (nn.MultiheadAttention's is its own in_proj_*)
    _names = ("weight", "bias")  # qkv's

    def _fused(self) -> tuple[Tensor, Tensor | None]:
        """The fused ``(3 * H * head_dim, E)`` input projection's weight and bias."""
        raise NotImplementedError

    def _sources(self) -> tuple[Tensor | None, ...]:
        return self._fused()

    def _owner(self) -> nn.Module:
        return self.qkv


    def _setup(
        self, embed: Span, heads: Span, head_dim: int, scale: float | None, *more: Span | None
    ) -> None:
        if not heads.prefix or heads.segments[0][2] != 1:
            raise UsageError(f"the heads of a slimmable attention must be one group, got {heads!r}")
        space = space_of(heads, embed, *more)
        if not isinstance(space, WidthSpace):
            raise UsageError("a slimmable attention needs a slimmable group (heads or embedding)")
        self.embed_in, self.heads, self.head_dim = embed, heads, int(head_dim)
        self.space = space
        self.num_heads = heads.full
        self.scale = head_dim**-0.5 if scale is None else float(scale)

    def _compute(self, counts: Any, key: str) -> tuple[Any, Tensor, Tensor | None]:
        """(kept heads, weight, bias): ``(3a, e)`` and ``(3a,)`` where every head runs, else
        ``(3, e, a)`` (transposed for the batched product) and ``(3, 1, a)``."""
        h = self.heads.count(counts)
        e = self.embed_in.count(counts)
        full = self.num_heads * self.head_dim
        weight, bias = self._fused()
        if h == self.num_heads:
            return h, (weight if e == weight.shape[1] else weight[:, :e]), bias
        a = h * self.head_dim
        weight = weight.view(3, full, -1)[:, :a, :e].transpose(1, 2)
        return h, weight, None if bias is None else bias.view(3, 1, full)[:, :, :a]

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q, k, v of the kept heads, each ``(B, k, N, head_dim)``; ``x`` is ``(B, N, e)``."""
        h, weight, bias = self._current()
        b, n = x.shape[0], x.shape[1]
        if weight.dim() == 2:
            out = F.linear(x, weight, bias).reshape(b, n, 3, h, self.head_dim)
            return out.permute(2, 0, 3, 1, 4).unbind(0)  # type: ignore[return-value]
        x3 = x.reshape(1, b * n, -1).expand(3, -1, -1)
        out = torch.bmm(x3, weight) if bias is None else torch.baddbmm(bias, x3, weight)
        return out.view(3, b, n, h, self.head_dim).transpose(2, 3).unbind(0)  # type: ignore[return-value]

    def _attend(
        self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, is_causal: bool, p: float
    ) -> Tensor:
        """softmax(q k^T * scale + mask) v over the kept heads, as ``(B, N, k * head_dim)``."""
        x = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=p if self.training else 0.0,
            is_causal=is_causal, scale=self.scale,
        )
        return x.transpose(1, 2).flatten(2)

    def _frozen(self, counts: Any, key: str) -> tuple[Any, Tensor, Tensor | None]:
        """A frozen block's form: the kept heads' q/k/v rows gathered into one contiguous
        ``(3a, e)`` weight, for one ``F.linear`` (the dense export's computation)."""
        weight, bias, h, _ = self._dense_projections(counts)
        return h, weight.contiguous(), None if bias is None else bias.contiguous()

    def _dense_projections(self, counts: Any = None) -> tuple[Tensor, Tensor | None, int, int]:
        """(qkv weight, qkv bias, kept heads, active input channels) at ``counts`` (default:
        the current width's)."""
        counts = self.space.active if counts is None else counts
        h = self.heads.count(counts)
        a, e, full = h * self.head_dim, self.embed_in.count(counts), self.num_heads * self.head_dim
        fused_weight, fused_bias = self._fused()
        weight = fused_weight.view(3, full, -1)[:, :a, :e].reshape(3 * a, e)
        bias = None if fused_bias is None else fused_bias.view(3, full)[:, :a].reshape(-1)
        return weight, bias, h, e


class USAttention(_HeadsCore):
    """timm's ``Attention`` with slimmable heads and embedding (see the module docstring)."""

    def __init__(
        self,
        embed_in: int | Span,
        embed_out: int | Span,
        heads: int | Span,
        head_dim: int,
        qkv_bias: bool = False,
        proj_bias: bool = True,
        scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        embed, heads = as_span(embed_in), as_span(heads)
        self._setup(embed, heads, head_dim, scale, as_span(embed_out))
        self.qkv = nn.Linear(embed.full, 3 * heads.full * head_dim, bias=qkv_bias)
        self.q_norm: nn.Module = nn.Identity()
        self.k_norm: nn.Module = nn.Identity()
        self.norm: nn.Module = nn.Identity()
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = USLinear(_heads_span(heads, head_dim), embed_out, bias=proj_bias)
        self.proj_drop = nn.Dropout(proj_drop)

    def _fused(self) -> tuple[Tensor, Tensor | None]:
        return self.qkv.weight, self.qkv.bias

    @classmethod
    def from_module(
        cls, attn: Any, embed_in: Span | None, embed_out: Span | None, heads: Span | None
    ) -> USAttention:
        """The slimmable form of a timm ``Attention`` (parameters and norms kept); ``None``
        spans are the module's own channels, which do not slim."""
        why = unsupported(attn)
        if why:
            raise UsageError(f"cannot slim this timm Attention: {why}")
        heads = heads if heads is not None else as_span(attn.num_heads)
        layer = cls(
            embed_in if embed_in is not None else attn.qkv.in_features,
            embed_out if embed_out is not None else attn.proj.out_features,
            heads,
            attn.head_dim,
            attn.qkv.bias is not None,
            attn.proj.bias is not None,
            attn.scale,
        )
        layer.qkv = attn.qkv
        layer.proj = USLinear.from_module(attn.proj, _heads_span(heads, attn.head_dim), embed_out)
        layer.q_norm, layer.k_norm, layer.norm = attn.q_norm, attn.k_norm, attn.norm
        layer.attn_drop, layer.proj_drop = attn.attn_drop, attn.proj_drop
        return layer

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        q, k, v = self._qkv(x)
        q, k = self.q_norm(q), self.k_norm(k)
        p = self.attn_drop.p if isinstance(self.attn_drop, nn.Dropout) else 0.0
        x = self.norm(self._attend(q, k, v, attn_mask, is_causal, p))
        return self.proj_drop(self.proj(x))

    def extra_repr(self) -> str:
        return f"{self.embed_in} -> heads {self.heads!r} x {self.head_dim}"

    @torch.no_grad()
    def to_dense(self, stats: bool = True) -> nn.Module:
        """timm's ``Attention`` of the narrower config (``proj`` is already dense)."""
        from timm.layers import Attention

        weight, bias, h, e = self._dense_projections()
        dense: Any = Attention(
            e, h, attn_head_dim=self.head_dim, dim_out=self.proj.out_features,
            qkv_bias=bias is not None, device="meta", dtype=weight.dtype,
        )
        dense.qkv.weight = dense_param(weight)
        dense.qkv.bias = None if bias is None else dense_param(bias)
        dense.scale = self.scale
        dense.q_norm, dense.k_norm, dense.norm = self.q_norm, self.k_norm, self.norm
        dense.attn_drop, dense.proj, dense.proj_drop = self.attn_drop, self.proj, self.proj_drop
        return dense


class USMultiheadAttention(_HeadsCore):
    """``nn.MultiheadAttention`` (q, k and v of one embedding, ``kdim == vdim == embed_dim``)
    with slimmable heads and embedding; ``need_weights`` returns the kept heads' weights."""

    def __init__(
        self,
        mha: nn.MultiheadAttention,
        embed: Span | None,
        heads: Span | None,
        embed_out: Span | None = None,
    ) -> None:
        """``embed``: the input's channels (``None``: fixed), ``heads`` (``None``: all heads
        run), ``embed_out``: the output's (default: the input's)."""
        super().__init__()
        why = unsupported(mha)
        if why:
            raise UsageError(f"cannot slim this nn.MultiheadAttention: {why}")
        embed_out = embed if embed_out is None else embed_out
        heads = heads if heads is not None else as_span(mha.num_heads)
        embed_in = as_span(embed if embed is not None else mha.embed_dim)
        self._setup(embed_in, heads, mha.head_dim, None, embed_out)
        self.embed_dim, self.batch_first, self.dropout = mha.embed_dim, mha.batch_first, mha.dropout
        self.in_proj_weight = mha.in_proj_weight
        self.in_proj_bias = mha.in_proj_bias
        self.out_proj = USLinear.from_module(
            mha.out_proj, _heads_span(heads, mha.head_dim), embed_out
        )

    _names = ("in_proj_weight", "in_proj_bias")

    def _owner(self) -> nn.Module:
        return self

    @property
    def proj(self) -> USLinear:  # type: ignore[override]
        return self.out_proj

    def _fused(self) -> tuple[Tensor, Tensor | None]:
        return self.in_proj_weight, self.in_proj_bias

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
        if key is not query or value is not query:
            raise UsageError("a slimmable nn.MultiheadAttention runs self-attention only")
        x = query if self.batch_first else query.transpose(0, 1)
        q, k, v = self._qkv(x)
        p = self.dropout if self.training else 0.0
        out, weights = attention(
            q, k, v, attn_mask, key_padding_mask, is_causal, self.scale, p, need_weights,
            average_attn_weights,
        )
        out = self.out_proj(out)
        return (out if self.batch_first else out.transpose(0, 1)), weights

    def extra_repr(self) -> str:
        return f"{self.embed_in} -> heads {self.heads!r} x {self.head_dim}"

    @torch.no_grad()
    def to_dense(self, stats: bool = True) -> nn.Module:
        """``nn.MultiheadAttention`` of the narrower config where its embedding equals its
        heads' width (``E' == k * head_dim``, as MultiheadAttention requires), else the same
        computation as one :class:`USMultiheadAttention` of fixed channels."""
        weight, bias, h, e = self._dense_projections()
        out_proj: Any = self.out_proj  # already dense (nn.Linear)
        if e == h * self.head_dim == out_proj.out_features:
            mha: Any = nn.MultiheadAttention(
                e, h, self.dropout, bias=bias is not None, batch_first=self.batch_first,
                device=weight.device, dtype=weight.dtype,
            )
            mha.in_proj_weight = dense_param(weight)
            mha.in_proj_bias = None if bias is None else dense_param(bias)
            mha.out_proj = out_proj
            return mha
        dense = MultiheadSelfAttention(h, self.head_dim, self.scale, self.dropout, self.batch_first)
        dense.in_proj = nn.Linear(e, weight.shape[0], bias is not None, weight.device, weight.dtype)
        dense.in_proj.weight = dense_param(weight)
        if bias is not None:
            dense.in_proj.bias = dense_param(bias)
        dense.out_proj = out_proj
        return dense
