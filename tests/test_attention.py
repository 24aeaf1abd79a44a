"""Slimmable attention (usnet.nn.attention) against independent oracles: the original module with
the dropped heads' output columns zeroed (dropping a head is exactly that) and the dropped
embedding channels of its input zeroed, and its dense export."""

from __future__ import annotations

import copy

import pytest
import torch
from timm.layers import Attention
from torch import nn

import usnet
from usnet.export import extract
from usnet.nn import USAttention, USMultiheadAttention, WidthSpace

E, H, HD = 32, 4, 8  # embedding, heads, head_dim


class Holder(nn.Module):
    """A US model around one attention: embedding and heads are two channel groups."""

    def __init__(self, attn: nn.Module) -> None:
        super().__init__()
        self.width_space = space = WidthSpace(0.25)
        embed = space.group("embed", E)
        heads = space.group("heads", H, divisor=1)
        self.mha = isinstance(attn, nn.MultiheadAttention)  # its call signature
        if isinstance(attn, nn.MultiheadAttention):
            self.attn: nn.Module = USMultiheadAttention(attn, embed, heads)
        else:
            self.attn = USAttention.from_module(attn, embed, embed, heads)
        space.set(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mha:
            return self.attn(x, x, x, need_weights=False)[0]
        return self.attn(x)


def _timm() -> Attention:
    torch.manual_seed(0)
    return Attention(E, H, qkv_bias=True).eval()


def _mha(batch_first: bool = True) -> nn.MultiheadAttention:
    torch.manual_seed(0)
    return nn.MultiheadAttention(E, H, batch_first=batch_first).eval()


def _oracle(original: nn.Module, heads: int, e: int) -> nn.Module:
    """The original with the heads past ``heads`` dropped (their columns of the output
    projection zeroed) and outputs past ``e`` ignored (the caller zeroes inputs past ``e``)."""
    oracle = copy.deepcopy(original)
    proj = oracle.proj if isinstance(oracle, Attention) else oracle.out_proj
    with torch.no_grad():
        proj.weight[:, heads * HD :] = 0
    return oracle


@pytest.mark.parametrize("kind", ["timm", "mha"])
@pytest.mark.parametrize("config", [1.0, 0.5, 0.25, {"embed": 1.0, "heads": 0.5}])
def test_equals_the_original_with_dropped_heads_and_channels_zeroed(kind, config):
    original = _timm() if kind == "timm" else _mha()
    model = Holder(copy.deepcopy(original)).eval()
    space = usnet.nn.width_space(model)
    counts = space.channels(config)
    e, k = counts["embed"], counts["heads"]
    x = torch.randn(2, 5, E)
    x[..., e:] = 0
    oracle = _oracle(original, k, e)
    with torch.no_grad(), usnet.width(model, config):
        got = model(x[..., :e])
        want = oracle(x) if kind == "timm" else oracle(x, x, x, need_weights=False)[0]
    assert got.shape == (2, 5, e)
    torch.testing.assert_close(got, want[..., :e], rtol=1e-5, atol=1e-6)
    if config == 1.0:
        assert k == H and e == E


@pytest.mark.parametrize("kind", ["timm", "mha"])
def test_dense_export_is_plain_torch_and_computes_the_same(kind):
    original = _timm() if kind == "timm" else _mha()
    model = Holder(original).eval()
    x = torch.randn(3, 7, E)
    for config in (0.5, {"embed": 0.5, "heads": 1.0}, 1.0):
        dense = extract(model, config)
        assert not any(type(m).__module__.startswith("usnet.") and "Sliced" in type(m).__name__
                       for m in dense.modules())
        e = usnet.nn.width_space(model).channels(config)["embed"]
        with torch.no_grad(), usnet.width(model, config):
            torch.testing.assert_close(dense(x[..., :e]), model(x[..., :e]), rtol=1e-5, atol=1e-6)
    attn = extract(model, 1.0).attn
    expected = Attention if kind == "timm" else nn.MultiheadAttention
    assert type(attn) is expected  # the narrower config of the original class


@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_masks_weights_and_layout_match_torch(batch_first):
    original = _mha(batch_first)
    us = Holder(copy.deepcopy(original)).eval().attn
    x = torch.randn(2, 6, E) if batch_first else torch.randn(6, 2, E)
    pad = torch.zeros(2, 6, dtype=torch.bool)
    pad[1, 4:] = True
    causal = torch.triu(torch.ones(6, 6, dtype=torch.bool), 1)
    for kwargs in (
        {"need_weights": True},
        {"need_weights": False, "key_padding_mask": pad},
        {"need_weights": True, "key_padding_mask": pad, "attn_mask": causal},
        {"need_weights": True, "average_attn_weights": False},
    ):
        with torch.no_grad():
            want, want_w = original(x, x, x, **kwargs)
            got, got_w = us(x, x, x, **kwargs)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        if want_w is None:
            assert got_w is None
        else:
            torch.testing.assert_close(got_w, want_w, rtol=1e-5, atol=1e-6)


def test_macs_count_the_attention_matmuls_and_halve_with_the_width():
    model = Holder(_timm())  # its input is the (slimmed) embedding itself
    full = usnet.macs(model, 1.0, input_size=(16, E))
    half = usnet.macs(model, 0.5, input_size=(16, E // 2))
    n = 16  # tokens: qkv 3*N*E*E, scores and values 2*N*N*E, proj N*E*E
    assert full == 4 * n * E * E + 2 * n * n * E
    assert half <= 0.6 * full
