"""Channel rounding (design.md): make_divisible, active channels, and the models' channel groups."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import usnet
from usnet.models.mobilenet_v2 import InvertedResidual
from usnet.nn import active_channels, make_divisible, width_space


@pytest.mark.parametrize(
    ("v", "expected"),
    [
        (32 * 0.25, 8),
        (24 * 0.35, 8),
        (1280 * 1.0, 1280),
        (11.0, 16),
        (17.0, 16),
        (19.9, 24),
        (3.0, 9),
    ],
)
def test_make_divisible_known_values(v: float, expected: int) -> None:
    # 19.9 -> 24 and 3.0 -> 9: the rule adds the divisor to a result below 0.9 v.
    assert make_divisible(v) == expected


@settings(max_examples=300, deadline=None)
@given(v=st.floats(0.5, 5000.0), d=st.sampled_from([1, 2, 4, 6, 8, 16]))
def test_make_divisible_invariants(v: float, d: int) -> None:
    r = make_divisible(v, d)
    assert r >= 0.9 * v  # never more than 10% below
    assert r <= v + d  # and never more than one divisor above
    if v >= d / 2:
        assert r % d == 0


@settings(max_examples=300, deadline=None)
@given(
    full=st.integers(8, 2048),
    ratio=st.sampled_from([1, 6]),
    w1=st.floats(0.25, 1.0),
    w2=st.floats(0.25, 1.0),
)
def test_active_channels_monotone_and_bounded(full: int, ratio: int, w1: float, w2: float) -> None:
    full = make_divisible(full) * ratio
    lo, hi = sorted((w1, w2))
    a_lo, a_hi = active_channels(full, lo, ratio), active_channels(full, hi, ratio)
    assert 1 <= a_lo <= a_hi <= full
    assert a_lo % ratio == 0 and a_hi % ratio == 0
    assert active_channels(full, 1.0, ratio) == full


MODELS = ["us_mobilenet_v1", "us_mobilenet_v2", "us_mobilenet_v1_small", "us_mobilenet_v2_small"]


@pytest.fixture(scope="module")
def spaces():
    return {name: usnet.create_model(name) for name in MODELS}


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(MODELS), u1=st.floats(0, 1), u2=st.floats(0, 1))
def test_model_channels_monotone_in_width(spaces, name: str, u1: float, u2: float) -> None:
    space = width_space(spaces[name])
    lo, hi = sorted(space.width_min + u * (space.width_max - space.width_min) for u in (u1, u2))
    a_lo, a_hi = space.resolve(lo)[0], space.resolve(hi)[0]
    assert all(1 <= a <= b for a, b in zip(a_lo, a_hi, strict=True))
    full = tuple(g.full for g in space.groups)
    assert space.resolve(space.width_max)[0] == full
    assert all(b <= f for b, f in zip(a_hi, full, strict=True))


@settings(max_examples=40, deadline=None)
@given(u=st.floats(0, 1), v=st.floats(0, 1))
def test_v2_expanded_channels_are_t_times_block_input(spaces, u: float, v: float) -> None:
    model = spaces["us_mobilenet_v2"]
    space = width_space(model)
    span = space.width_max - space.width_min
    # a non-uniform config too: the stem at one width, everything else at another
    config = {"stem": space.width_min + u * span, "*": space.width_min + v * span}
    with usnet.width(model, config):
        blocks = [b for b in model.modules() if isinstance(b, InvertedResidual)]
        expanding = [b for b in blocks if len(b.body) == 8]
        assert expanding
        for b in expanding:
            expand = b.body[0]
            t = expand.out_span.group.ratio
            assert t == 6
            assert expand.out_span.active == t * expand.in_span.active
        for b in blocks:  # both sides of a residual add are one group
            if b.residual:
                assert b.body[0].in_span.group is b.body[-2].out_span.group
