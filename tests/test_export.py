"""usnet.export.extract: the dense network of a width equals the US model at that width."""

from __future__ import annotations

import random

import pytest
import torch
from fake_stats import fake_calibrate, randomize_affine
from torch import nn

import usnet
from usnet.export import Residual, extract
from usnet.models import USModel
from usnet.nn import UncalibratedWidthError, USConv2d, USLinear, width_space
from usnet.profile import macs, params


def random_widths(model: nn.Module, n_uniform: int, n_non_uniform: int, seed: int) -> list:
    rng = random.Random(seed)
    space = width_space(model)
    lo, hi = space.width_min, space.width_max
    widths: list = [lo, hi] + [round(rng.uniform(lo, hi), 3) for _ in range(n_uniform - 2)]
    names = [g.name for g in space.groups if g.slimmable]
    for _ in range(n_non_uniform):
        widths.append({name: round(rng.uniform(lo, hi), 3) for name in names})
    return widths


def assert_standard_torch(dense: nn.Module) -> None:
    for m in dense.modules():
        assert type(m) is Residual or type(m).__module__.startswith("torch.nn."), type(m)
    assert not hasattr(dense, "width_space")


@pytest.mark.parametrize("name", ["us_mobilenet_v1", "us_mobilenet_v2"])
def test_extract_equals_us_model(name: str) -> None:
    torch.manual_seed(0)
    model = usnet.create_model(name, input_size=64)
    randomize_affine(model)
    widths = random_widths(model, n_uniform=7, n_non_uniform=4, seed=1)
    fake_calibrate(model, widths)
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    for i, w in enumerate(widths):
        dense = extract(model, w)
        assert_standard_torch(dense)
        assert not dense.training
        with torch.no_grad(), usnet.width(model, w):
            expected = model(x)
        got = dense(x).detach()
        assert expected.abs().max() > 0.1  # outputs large enough for the check to mean something
        assert (got - expected).abs().max().item() <= 1e-5, w
        if i % 4 == 0:  # the costs of the dense network are the costs profile reports
            assert macs(dense, None) == macs(model, w)
            assert params(dense, None) == params(model, w)
    assert usnet.get_width(model) == 1.0 and not model.training


def test_extract_copies_and_leaves_model_alone() -> None:
    model = usnet.create_model("us_mobilenet_v2_small")
    fake_calibrate(model, [0.5, 1.0])
    usnet.set_width(model, 0.75)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for w in (0.5, 1.0):
        dense = extract(model, w)
        with torch.no_grad():
            for p in (*dense.parameters(), *dense.buffers()):
                p.add_(1)
    assert usnet.get_width(model) == 0.75 and model.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert dense.input_size == (1, 28, 28)
    head = dense[0][0]
    assert isinstance(head[0], nn.Conv2d) and isinstance(head[1], nn.BatchNorm2d)
    assert [type(m) for m in dense[0][1:4]] == [nn.Sequential, nn.Sequential, Residual]


def test_uncalibrated_width_raises_the_models_error() -> None:
    model = usnet.create_model("us_mobilenet_v1_small").eval()
    fake_calibrate(model, [1.0])
    with torch.no_grad(), pytest.raises(UncalibratedWidthError) as from_model:
        with usnet.width(model, 0.5):
            model(torch.zeros(1, 1, 28, 28))
    with pytest.raises(UncalibratedWidthError) as from_extract:
        extract(model, 0.5)
    assert str(from_extract.value) == str(from_model.value)
    assert "usnet.calibrate" in str(from_extract.value)
    assert params(model, 0.5) > 0  # counting parameters needs no statistics
    with pytest.raises(TypeError, match="not a US model"):
        extract(nn.Linear(2, 2), None)


def test_switchable_bn_model() -> None:
    torch.manual_seed(0)
    model = usnet.create_model("us_mobilenet_v2_small", switches=[0.35, 0.5, 1.0])
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    model.eval()
    x = torch.randn(2, 1, 28, 28)
    dense = extract(model, 0.5)
    assert_standard_torch(dense)
    with torch.no_grad(), usnet.width(model, 0.5):
        assert (dense(x) - model(x)).abs().max().item() <= 1e-5


class Scaled(nn.Module):
    """A block no converter knows: it must survive, with its children made dense."""

    def __init__(self, conv: nn.Module) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.conv(x)


class Doubling(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x

    def to_dense(self, stats: bool = True) -> nn.Module:
        return _Twice()


class _Twice(nn.Module):  # stands for "some plain torch module"
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + x


class Custom(USModel):
    """A model of an unknown family: no BN, a custom block and a two-output head."""

    def __init__(self) -> None:
        super().__init__(0.25, 1.0, (3, 8, 8))
        ch = self.width_space.group("body", 16)
        self.block = Scaled(USConv2d(3, ch, 3, bias=True))
        self.twice = Doubling()
        self.heads = nn.ModuleList([USLinear(ch, 4), USLinear(ch, 1)])
        self.finish()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.twice(self.block(x)).mean((2, 3))
        return self.heads[0](h), self.heads[1](h)


def test_unknown_family_exports_generically() -> None:
    torch.manual_seed(0)
    model = Custom().eval()
    dense = extract(model, 0.5)
    assert isinstance(dense, Custom) and not hasattr(dense, "width_space")
    assert isinstance(dense.block, Scaled) and type(dense.block.conv) is nn.Conv2d
    assert isinstance(dense.twice, _Twice)  # its own to_dense() was used
    assert dense.block.conv.out_channels == 8 and dense.heads[1].in_features == 8
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad(), usnet.width(model, 0.5):
        for got, expected in zip(dense(x), model(x), strict=True):
            assert torch.allclose(got, expected, atol=1e-6)
    assert params(model, 0.5) == sum(p.numel() for p in dense.parameters()) == 8 * 27 + 8 + 45
