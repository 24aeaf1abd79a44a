"""Slimmable shifted-window attention (torchvision's Swin Transformer v1 and v2).

Whole heads slim and ``head_dim`` stays, as in :mod:`usnet.nn.attention`; what a window adds per
head is sliced with the heads: the relative position bias table's columns (v1), the rows of the
last linear of the continuous position bias MLP and the logit scales (v2). Windows, shifts and
their masks do not depend on the channels. torchvision's ``shifted_window_attention`` takes the
head size from the input's channels (``C // num_heads``), which a width that slims heads and
embedding apart breaks, so the computation is written here with ``head_dim`` explicit, in
torchvision's order of operations.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import _heads_span, _HeadsCore
from .groups import Span, as_span
from .linear import USLinear
from .sliced import dense_param


def shifted_window_attention(
    x: Tensor,
    qkv: Callable[[Tensor], tuple[Tensor, Tensor, Tensor]],
    proj: Callable[[Tensor], Tensor],
    bias: Tensor,
    head_dim: int,
    window_size: list[int],
    shift_size: list[int],
    attention_dropout: float,
    training: bool,
    logit_scale: Tensor | None = None,
) -> Tensor:
    """torchvision's shifted window attention of ``x`` (``B, H, W, C``) with the projections as
    callables: ``qkv`` maps windows ``(B', N, C)`` to q, k, v of ``(B', heads, N, head_dim)``,
    ``proj`` the heads' outputs ``(B', N, heads * head_dim)`` to the output channels."""
    b, h, w, _ = x.shape
    pad_r = (window_size[1] - w % window_size[1]) % window_size[1]
    pad_b = (window_size[0] - h % window_size[0]) % window_size[0]
    x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    _, pad_h, pad_w, c = x.shape
    shift_size = list(shift_size)
    if window_size[0] >= pad_h:
        shift_size[0] = 0
    if window_size[1] >= pad_w:
        shift_size[1] = 0
    shifted = sum(shift_size) > 0
    if shifted:
        x = torch.roll(x, shifts=(-shift_size[0], -shift_size[1]), dims=(1, 2))
    num_windows = (pad_h // window_size[0]) * (pad_w // window_size[1])
    x = x.view(b, pad_h // window_size[0], window_size[0], pad_w // window_size[1], window_size[1], c)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b * num_windows, window_size[0] * window_size[1], c)
    q, k, v = qkv(x)
    heads = q.shape[1]
    if logit_scale is not None:  # cosine attention
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        attn = attn * torch.clamp(logit_scale, max=math.log(100.0)).exp()
    else:
        attn = (q * head_dim**-0.5).matmul(k.transpose(-2, -1))
    attn = attn + bias
    if shifted:
        mask = _shift_mask(x, pad_h, pad_w, window_size, shift_size, num_windows)
        n = x.size(1)
        attn = attn.view(x.size(0) // num_windows, num_windows, heads, n, n)
        attn = (attn + mask.unsqueeze(1).unsqueeze(0)).view(-1, heads, n, n)
    attn = F.dropout(F.softmax(attn, dim=-1), p=attention_dropout, training=training)
    out = proj(attn.matmul(v).transpose(1, 2).flatten(2))
    c_out = out.shape[-1]
    out = out.view(b, pad_h // window_size[0], pad_w // window_size[1], window_size[0], window_size[1], c_out)
    out = out.permute(0, 1, 3, 2, 4, 5).reshape(b, pad_h, pad_w, c_out)
    if shifted:
        out = torch.roll(out, shifts=(shift_size[0], shift_size[1]), dims=(1, 2))
    return out[:, :h, :w, :].contiguous()


def _shift_mask(
    x: Tensor, pad_h: int, pad_w: int, window: list[int], shift: list[int], num_windows: int
) -> Tensor:
    """torchvision's mask that keeps a shifted window's regions from attending to each other."""
    mask = x.new_zeros((pad_h, pad_w))
    h_slices = ((0, -window[0]), (-window[0], -shift[0]), (-shift[0], None))
    w_slices = ((0, -window[1]), (-window[1], -shift[1]), (-shift[1], None))
    count = 0
    for hs in h_slices:
        for ws in w_slices:
            mask[hs[0] : hs[1], ws[0] : ws[1]] = count
            count += 1
    mask = mask.view(pad_h // window[0], window[0], pad_w // window[1], window[1])
    mask = mask.permute(0, 2, 1, 3).reshape(num_windows, window[0] * window[1])
    mask = mask.unsqueeze(1) - mask.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


def _position_bias(module: Any, heads: int) -> Tensor:
    """The relative position bias of the first ``heads`` heads, ``(1, heads, N, N)``."""
    from torchvision.models.swin_transformer import _get_relative_position_bias

    if module.v2:
        mlp = module.cpb_mlp
        hidden = mlp[1](mlp[0](module.relative_coords_table))
        table = F.linear(hidden, mlp[2].weight[:heads], None).view(-1, heads)
        bias = _get_relative_position_bias(table, module.relative_position_index, module.window_size)
        return 16 * torch.sigmoid(bias)
    table = module.relative_position_bias_table[:, :heads]
    return _get_relative_position_bias(table, module.relative_position_index, module.window_size)


class USWindowAttention(_HeadsCore):
    """torchvision's ``ShiftedWindowAttention`` (``v2``: ``ShiftedWindowAttentionV2``) with
    slimmable heads and embedding; parameter names as the original's."""

    relative_position_index: Tensor
    relative_coords_table: Tensor
    logit_scale: Tensor

    def __init__(self, swa: Any, embed_in: Span | None, embed_out: Span | None, heads: Span | None):
        super().__init__()
        self.v2 = hasattr(swa, "cpb_mlp")
        head_dim = swa.qkv.out_features // 3 // swa.num_heads
        heads = heads if heads is not None else as_span(swa.num_heads)
        embed = as_span(embed_in if embed_in is not None else swa.qkv.in_features)
        out = embed_out if embed_out is not None else as_span(swa.proj.out_features)
        self._setup(embed, heads, head_dim, None, out)
        self._views = not (self.v2 and swa.qkv.bias is not None)  # v2's bias: a copy per call
        self.window_size, self.shift_size = list(swa.window_size), list(swa.shift_size)
        self.attention_dropout, self.dropout = swa.attention_dropout, swa.dropout
        self.qkv = swa.qkv
        self.proj = USLinear.from_module(swa.proj, _heads_span(heads, head_dim), out)
        self.register_buffer("relative_position_index", swa.relative_position_index)
        if self.v2:
            self.logit_scale = swa.logit_scale
            self.cpb_mlp = swa.cpb_mlp
            self.register_buffer("relative_coords_table", swa.relative_coords_table)
        else:
            self.relative_position_bias_table = swa.relative_position_bias_table

    def _fused(self) -> tuple[Tensor, Tensor | None]:
        bias: Tensor | None = self.qkv.bias
        if self.v2 and bias is not None:  # v2 has no key bias (torchvision zeroes it per call)
            n = bias.numel() // 3
            bias = torch.cat([bias[:n], torch.zeros_like(bias[n : 2 * n]), bias[2 * n :]])
        return self.qkv.weight, bias

    def forward(self, x: Tensor) -> Tensor:
        h = self.heads.count(self.space.counts())
        return shifted_window_attention(
            x,
            self._qkv,
            lambda t: F.dropout(self.proj(t), p=self.dropout, training=self.training),
            _position_bias(self, h),
            self.head_dim,
            self.window_size,
            self.shift_size,
            self.attention_dropout,
            self.training,
            self.logit_scale[:h] if self.v2 else None,
        )

    def extra_repr(self) -> str:
        return f"{self.embed_in} -> heads {self.heads!r} x {self.head_dim}, window {self.window_size}"

    @torch.no_grad()
    def to_dense(self, stats: bool = True) -> nn.Module:
        """torchvision's ``ShiftedWindowAttention`` (v2) of the narrower config where its
        embedding equals its heads' width (which torchvision's module assumes), else a
        :class:`WindowAttention` of plain layers."""
        from torchvision.models import swin_transformer as tv

        weight, bias, h, e = self._dense_projections()  # v2: its key bias zero, as run
        proj: Any = self.proj  # already dense
        a = h * self.head_dim
        if e == a == proj.out_features:
            cls = tv.ShiftedWindowAttentionV2 if self.v2 else tv.ShiftedWindowAttention
            dense: Any = cls(
                e, self.window_size, self.shift_size, h, bias is not None, proj.bias is not None,
                self.attention_dropout, self.dropout,
            )  # fmt: skip
        else:
            dense = WindowAttention(self, h, e)
        dense.qkv.weight = dense_param(weight)
        if bias is not None:
            dense.qkv.bias = dense_param(bias)
        dense.proj = proj
        if self.v2:
            dense.logit_scale = dense_param(self.logit_scale[:h])
            dense.cpb_mlp = self.cpb_mlp
            dense.cpb_mlp[2].weight = dense_param(self.cpb_mlp[2].weight[:h])
            dense.cpb_mlp[2].out_features = h
        else:
            dense.relative_position_bias_table = dense_param(self.relative_position_bias_table[:, :h])
        return dense.to(weight.device, weight.dtype)


class WindowAttention(nn.Module):
    """The dense form of a :class:`USWindowAttention` whose embedding differs from its heads'
    width (which torchvision's module cannot hold): plain ``qkv``/``proj`` linears and the
    per-head position bias, computed as torchvision computes it."""

    relative_position_index: Tensor
    relative_coords_table: Tensor
    logit_scale: Tensor
    qkv: nn.Linear
    proj: nn.Linear

    def __init__(self, us: USWindowAttention, heads: int, embed: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.v2 = heads, us.head_dim, us.v2
        self.window_size, self.shift_size = list(us.window_size), list(us.shift_size)
        self.attention_dropout, self.dropout = us.attention_dropout, us.dropout
        self.qkv = nn.Linear(embed, 3 * heads * us.head_dim, us.qkv.bias is not None)
        self.register_buffer("relative_position_index", us.relative_position_index.clone())
        if self.v2:
            self.register_buffer("relative_coords_table", us.relative_coords_table.clone())

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        bias: Tensor | None = self.qkv.bias
        if self.v2 and bias is not None:
            n = bias.numel() // 3
            bias = torch.cat([bias[:n], torch.zeros_like(bias[n : 2 * n]), bias[2 * n :]])
        out = F.linear(x, self.qkv.weight, bias).unflatten(-1, (3, self.num_heads, self.head_dim))
        q, k, v = out.permute(2, 0, 3, 1, 4).unbind(0)
        return q, k, v

    def forward(self, x: Tensor) -> Tensor:
        return shifted_window_attention(
            x,
            self._qkv,
            lambda t: F.dropout(self.proj(t), p=self.dropout, training=self.training),
            _position_bias(self, self.num_heads),
            self.head_dim,
            self.window_size,
            self.shift_size,
            self.attention_dropout,
            self.training,
            self.logit_scale if self.v2 else None,
        )
