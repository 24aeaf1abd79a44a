"""Registry and the US-MobileNets: the authors' MACs, parameters, fixed layers, small variants."""

from __future__ import annotations

import pytest
import torch

import usnet
from usnet.nn import SwitchableBatchNorm2d, USLinear, width_space
from usnet.profile import macs, params

# MACs (millions, 224 px, 1000 classes) of the authors' models; paper: 569/325/149/41, 301/209/97/59.
REFERENCE_MACS = {
    "us_mobilenet_v1": {1.0: 568.740352, 0.75: 325.400448, 0.5: 149.497088, 0.25: 41.030272},
    "us_mobilenet_v2": {1.0: 300.774272, 0.75: 209.069792, 0.5: 97.13184, 0.35: 59.285808},
}
# Parameters at full width: MobileNet v1 1.0 (4.23 M) and torchvision's mobilenet_v2 (3.50 M).
REFERENCE_PARAMS = {"us_mobilenet_v1": 4_231_976, "us_mobilenet_v2": 3_504_872}


@pytest.fixture(scope="module")
def imagenet_models():
    return {name: usnet.create_model(name) for name in REFERENCE_MACS}


@pytest.mark.parametrize("name", sorted(REFERENCE_MACS))
def test_macs_match_the_authors_models(imagenet_models, name: str) -> None:
    model = imagenet_models[name]
    for w, expected in REFERENCE_MACS[name].items():
        assert macs(model, w) == round(expected * 1e6), (name, w)


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS))
def test_params_at_full_width(imagenet_models, name: str) -> None:
    model = imagenet_models[name]
    assert params(model, 1.0) == REFERENCE_PARAMS[name]
    assert sum(p.numel() for p in model.parameters()) == REFERENCE_PARAMS[name]


def test_registry() -> None:
    names = usnet.list_models()
    assert {"us_mobilenet_v1", "us_mobilenet_v2", "us_mobilenet_v1_small"} <= set(names)
    model = usnet.create_model("us_mobilenet_v2_small", num_classes=7)
    assert model.arch == "us_mobilenet_v2_small" and model.arch_kwargs == {"num_classes": 7}
    with pytest.raises(ValueError, match="unknown model 'nope'; available"):
        usnet.create_model("nope")
    with pytest.raises(ValueError, match="bad arguments for model 'us_mobilenet_v1'.*colour"):
        usnet.create_model("us_mobilenet_v1", colour=3)


def test_fixed_layers(imagenet_models) -> None:
    v1, v2 = imagenet_models["us_mobilenet_v1"], imagenet_models["us_mobilenet_v2"]
    assert width_space(v1).width_min == 0.25 and width_space(v2).width_min == 0.35
    with usnet.width(v2, 0.35):
        last_conv = v2.features[-1][0]
        assert last_conv.out_span.active == 1280 and last_conv.in_span.active < 320
        assert v2.features[0][0].in_span.active == 3  # image channels
    with usnet.width(v1, 0.25):
        assert isinstance(v1.classifier, USLinear)
        assert v1.classifier.in_span.active == 256 and v1.classifier.out_span.active == 1000


@pytest.mark.parametrize("name", ["us_mobilenet_v1_small", "us_mobilenet_v2_small"])
def test_small_models_run_at_every_extreme(name: str) -> None:
    torch.manual_seed(0)
    model = usnet.create_model(name).train()
    space = width_space(model)
    assert model.input_size == (1, 28, 28)
    for w in (space.width_min, 0.6, space.width_max, {"stem": space.width_min, "*": 0.8}):
        with usnet.width(model, w):
            out = model(torch.randn(3, 1, 28, 28))
        assert out.shape == (3, 10) and torch.isfinite(out).all()
    assert macs(model, space.width_min) < macs(model, space.width_max) < 20e6


def test_switchable_bn_model() -> None:
    model = usnet.create_model("us_mobilenet_v2_small", switches=[0.35, 0.5, 1.0])
    assert any(isinstance(m, SwitchableBatchNorm2d) for m in model.modules())
    usnet.set_width(model, 0.5)
    model.train()
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match=r"not one of this model's switches \[0.35, 0.5, 1.0\]"):
        usnet.set_width(model, 0.75)
