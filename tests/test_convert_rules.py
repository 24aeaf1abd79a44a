"""Users' rules (usnet.convert.register_rule), and weight reparametrisations and hooks."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from convert_helpers import Plain, cbr, check_converted, randomize_norms
from torch import Tensor, nn
from torch.nn.utils import parametrizations, prune

import usnet
from usnet.convert import Channelwise, ConvertError, convert, register_rule, rules
from usnet.nn import width_space


@pytest.fixture(autouse=True)
def own_table(monkeypatch) -> None:
    monkeypatch.setattr(rules, "_RULES", {})  # each test registers into a table of its own


class Slope(nn.Module):
    """A learnable per-channel slope through a functional layer usnet does not know."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.rand(c) * 0.5)

    def forward(self, x: Tensor) -> Tensor:
        return F.prelu(x, self.weight)


def squash(x: Tensor) -> Tensor:
    """A channel-wise function fx cannot trace (Python on tensor values)."""
    return x if bool(x.max() < 10) else x.clamp(max=10)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem, self.slope, self.body = cbr(3, 32), Slope(32), cbr(32, 48)
        self.fc = nn.Linear(48, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(squash(self.body(self.slope(self.stem(x)))).mean((2, 3)))


def test_a_registered_module_and_function_convert() -> None:
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(ConvertError, match="module 'squash'|tracing"):
        convert(Net(), x)  # neither is known
    register_rule(Slope, Channelwise(params=("weight",)))
    register_rule(squash)  # "channelwise" by default
    assert usnet.convert.register_rule is register_rule  # both spellings of the docs
    torch.manual_seed(0)
    original = Net().eval()
    randomize_norms(original)
    model = convert(original, x)
    assert [g.name for g in width_space(model).groups] == ["stem.0", "body.0"]
    check_converted(original, model, x)
    with usnet.width(model, 0.25):
        assert model.slope.weight.shape == (width_space(model).channels()["stem.0"],)


class ShiftedSlope(Slope):
    """A slope and a per-channel shift: a channel-wise rule must name both."""

    def __init__(self, c: int) -> None:
        super().__init__(c)
        self.register_buffer("shift", torch.randn(c))

    def forward(self, x: Tensor) -> Tensor:
        return F.prelu(x, self.weight) + self.shift[:, None, None]


def test_a_rule_that_misses_a_per_channel_tensor_is_blamed_not_usnet() -> None:
    register_rule(ShiftedSlope, Channelwise(params=("weight",)))  # forgets "shift"
    net = nn.Sequential(cbr(3, 16), ShiftedSlope(16), cbr(16, 32), nn.AdaptiveAvgPool2d(1))
    with pytest.raises(ConvertError, match="self-check") as info:
        convert(net, torch.randn(2, 3, 8, 8))
    message = str(info.value)
    assert "register_rule (module '1')" in message and "every per-channel" in message
    assert "usnet bug: please report it" in message  # still said, after the likelier cause
    register_rule(ShiftedSlope, Channelwise(params=("weight", "shift")))
    convert(net, torch.randn(2, 3, 8, 8))


def test_a_fixed_rule_keeps_channels_whole_and_says_so() -> None:
    @register_rule
    class Gate(nn.Module):  # a decorator too; rules follow subclasses that keep the forward
        def forward(self, x: Tensor) -> Tensor:
            return x * torch.sigmoid(x)

    class Pinned(Gate):
        pass

    register_rule(Pinned, "fixed")
    net = nn.Sequential(
        cbr(3, 16), Pinned(), cbr(16, 32), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 2)
    )
    with pytest.warns(UserWarning, match=r"whole: '0.0' \(.*Pinned is registered as fixed\)"):
        model = convert(net, torch.randn(2, 3, 8, 8))
    assert [g.name for g in width_space(model).groups] == ["2.0"]
    with pytest.raises(ValueError, match="rule must be 'channelwise', 'fixed'"):
        register_rule(Gate, "sometimes")
    with pytest.raises(ValueError, match="target must be an nn.Module subclass or a function"):
        register_rule(3)
    with pytest.raises(ValueError, match="names parameters of a module, but 'squash'"):
        register_rule(squash, Channelwise(params=("weight",)))


@pytest.mark.parametrize("hooks", [True, False], ids=["hooks", "parametrize"])
def test_weight_reparametrisations_are_folded_on_the_copy(hooks: bool) -> None:
    torch.manual_seed(0)
    net = Plain().eval()
    randomize_norms(net)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        if hooks:
            torch.nn.utils.weight_norm(net.stem[0])
            torch.nn.utils.spectral_norm(net.body[0])
            prune.l1_unstructured(net.fc, "weight", 0.3)
            folded = "weight_norm of 'stem.0', spectral_norm of 'body.0', pruning of 'fc'"
        else:
            parametrizations.weight_norm(net.stem[0])
            parametrizations.spectral_norm(net.body[0])
            folded = "_WeightNorm parametrization of 'stem.0'.weight, _SpectralNorm"
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        net(torch.randn(4, 3, 8, 8))  # power iterations: u and v move in training only
        before = net(x)
    with pytest.warns(UserWarning, match=f"folded {folded}"):
        model = convert(net, x)
    with torch.no_grad():
        assert torch.equal(net(x), before)  # the original keeps its reparametrisations
    assert type(net.body[0]).__name__ == ("Conv2d" if hooks else "ParametrizedConv2d")
    check_converted(net, model, x)  # equal to the reparametrised original in eval mode
    assert all(type(p) is nn.Parameter for p in (model.stem[0].weight, model.body[0].weight))


def test_other_hooks_on_replaced_layers_are_refused() -> None:
    net = Plain()
    net.body[0].register_forward_hook(lambda m, i, o: o * 2)
    with pytest.raises(ConvertError, match="module 'body.0'.*it has hooks \\(<lambda>\\)"):
        convert(net, torch.randn(2, 3, 8, 8))
