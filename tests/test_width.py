"""Width control: validation, non-uniform configs, the context manager and the switch cache."""

from __future__ import annotations

import pytest
import torch

import usnet
from usnet.nn import channel_groups, parse_widths, width_space


@pytest.fixture
def model():
    torch.manual_seed(0)
    return usnet.create_model("us_mobilenet_v2_small")


@pytest.mark.parametrize("w", [0.3, 1.01, -1.0, float("nan")])
def test_out_of_range_names_width_and_range(model, w: float) -> None:
    with pytest.raises(ValueError, match=r"outside the model's width range \[0.35, 1.0\]") as e:
        usnet.set_width(model, w)
    assert str(w) in str(e.value)
    assert usnet.get_width(model) == 1.0  # a failed switch leaves the width alone


def test_bad_values_and_groups(model) -> None:
    with pytest.raises(ValueError, match="must be a real number"):
        usnet.set_width(model, "wide")
    with pytest.raises(ValueError, match=r"unknown channel group\(s\) \['nope'\]"):
        usnet.set_width(model, {"nope": 0.5, "*": 1.0})
    with pytest.raises(ValueError, match="misses channel group"):
        usnet.set_width(model, {"stem": 0.5})
    with pytest.raises(ValueError, match=r"stem 0.2 is outside"):
        usnet.set_width(model, {"stem": 0.2, "*": 1.0})


@pytest.mark.parametrize("w", ["0.5", True, b"1", [0.5], None, torch.tensor(0.5)])
def test_a_width_must_be_a_real_number(model, w: object) -> None:
    """float("0.5") and float(True) must not slip through as widths."""
    with pytest.raises(ValueError, match=r"must be a real number \(int or float") as e:
        usnet.set_width(model, w)
    assert repr(w) in str(e.value)
    with pytest.raises(ValueError, match=r"width of channel group 'stem' must be a real number"):
        usnet.set_width(model, {"stem": "0.5", "*": 1.0})
    with pytest.raises(ValueError, match="must be a real number"):
        usnet.set_width(model, {"*": False})
    assert usnet.get_width(model) == 1.0


def test_ints_and_numpy_floats_are_widths(model) -> None:
    np = pytest.importorskip("numpy")
    usnet.set_width(model, np.float32(0.5))
    assert usnet.get_width(model) == 0.5
    usnet.set_width(model, 1)
    assert usnet.get_width(model) == 1.0


def test_non_uniform_width(model) -> None:
    usnet.set_width(model, {"stem": 0.5, "*": 1.0})
    channels = width_space(model).channels()
    groups = {g.name: g.full for g in channel_groups(model)}
    assert channels["stem"] == 16 and groups["stem"] == 32
    assert all(channels[n] == full for n, full in groups.items() if n != "stem")
    assert model.features[0][0](torch.zeros(1, 1, 28, 28)).shape[1] == 16
    model.train()
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    # a mapping that gives every group the same width is that uniform width
    usnet.set_width(model, {"*": 0.5})
    assert usnet.get_width(model) == 0.5


def test_context_manager_restores_even_on_error(model) -> None:
    usnet.set_width(model, 0.75)
    with usnet.width(model, 0.5):
        assert usnet.get_width(model) == 0.5
        assert width_space(model).channels()["stem"] == 16
    assert usnet.get_width(model) == 0.75
    with pytest.raises(RuntimeError), usnet.width(model, 0.35):
        raise RuntimeError("boom")
    assert usnet.get_width(model) == 0.75
    assert width_space(model).channels()["stem"] == 24


def test_context_manager_restores_non_uniform_width(model) -> None:
    config = {"stem": 0.5, "*": 1.0}
    usnet.set_width(model, config)
    before = usnet.get_width(model)
    with usnet.width(model, 0.5):
        pass
    assert usnet.get_width(model) == before
    assert width_space(model).canonical(before) == before  # the canonical form is accepted


def test_switch_is_cached(model) -> None:
    space = width_space(model)
    first = space.plan_of(0.6)
    assert space.plan_of(0.6) is first  # computed once per config
    assert space.plan_of(0.6000000001) is first  # widths compare at 6 decimals
    usnet.set_width(model, 0.6)
    assert space.plan is first and space.active is first.active and space.key == first.key


def test_widths_that_round_alike_share_a_network() -> None:
    space = width_space(usnet.create_model("us_mobilenet_v1_small"))
    assert space.resolve(0.3)[1] == space.resolve(0.325)[1]
    assert space.resolve(0.3)[1] != space.resolve(0.35)[1]


def test_channel_groups_full_sizes(model) -> None:
    groups = channel_groups(model)
    assert groups[0].name == "stem" and groups[0].full == 32
    expand = [g for g in groups if g.name.endswith(".expand")]
    assert expand and all(g.ratio == 6 for g in expand)


def test_parse_widths() -> None:
    grid = parse_widths("0.35:1.0:0.025")
    assert len(grid) == 27 and grid[0] == 0.35 and grid[-1] == 1.0
    assert parse_widths("0.25, 0.5,1") == [0.25, 0.5, 1.0]
    with pytest.raises(ValueError, match="start:stop:step"):
        parse_widths("1.0:0.35:0.025")


@pytest.mark.parametrize("text", ["0.25:inf:0.1", "0.25:1.0:nan", "-inf:1:0.1", "0.5,inf"])
def test_parse_widths_rejects_non_finite_numbers(text: str) -> None:
    with pytest.raises(ValueError, match="must be finite"):
        parse_widths(text)


@pytest.mark.parametrize("text", ["0.25:1.0:1e-9", "0:1e300:1e-300", "0:1:0.0001"])
def test_parse_widths_bounds_the_grid(text: str) -> None:
    """A tiny step used to hang building 750M widths; 0:1e300:1e-300 overflowed."""
    with pytest.raises(ValueError, match="at most 10,000 are allowed"):
        parse_widths(text)
    assert len(parse_widths("0:1:0.0002")) == 5001


def test_unwrap_model_peels_compile_and_ddp_wrappers(model) -> None:
    """torch.compile's wrapper forwards attribute lookups, so it "has" a width space itself."""
    from usnet.nn import unwrap_model

    compiled = torch.compile(model)  # lazy: nothing is compiled until it is called
    assert unwrap_model(compiled) is model
    assert unwrap_model(torch.nn.DataParallel(compiled)) is model
    assert width_space(compiled) is model.width_space
    with pytest.raises(TypeError, match="Linear is not a US model"):
        unwrap_model(torch.compile(torch.nn.Linear(2, 2)))
