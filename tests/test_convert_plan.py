"""A converted model's plan: JSON that rebuilds it without tracing (checkpoints load fast),
refused where it does not fit the network."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import torchvision
from fake_stats import fake_calibrate

import usnet
from usnet.convert import ConvertError, api
from usnet.convert.plan import Plan, check
from usnet.convert.reparam import folded_copy
from usnet.nn import width_space


def _same(a: torch.nn.Module, b: torch.nn.Module, widths: list) -> None:
    x = torch.randn(2, 1, 32, 32)
    a.eval(), b.eval()
    for w in widths:
        with torch.no_grad(), usnet.width(a, w), usnet.width(b, w):
            assert torch.equal(a(x), b(x)), w


def test_a_converted_checkpoint_loads_without_tracing(tmp_path: Path, monkeypatch) -> None:
    kwargs = dict(num_classes=10, in_chans=1, input_size=32)
    model = usnet.create_model("torchvision:resnet18", **kwargs)
    plan = model.conversion["plan"]
    assert Plan.from_json(json.loads(json.dumps(plan))).to_json() == plan  # JSON round trip
    fake_calibrate(model, [0.5, {"conv1": 0.3, "*": 0.7}])
    usnet.save(model, tmp_path / "ck")
    assert json.loads((tmp_path / "ck/usnet.json").read_text())["conversion"] == model.conversion

    def no_tracing(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("load traced the model")

    with monkeypatch.context() as m:
        m.setattr(api, "trace_model", no_tracing)
        loaded = usnet.load(tmp_path / "ck")
    assert [g.name for g in width_space(loaded).groups] == [
        g.name for g in width_space(model).groups
    ]
    _same(model, loaded, [1.0, 0.5, {"conv1": 0.3, "*": 0.7}])
    assert loaded.conversion == model.conversion  # saved again, it keeps the record
    usnet.save(loaded, tmp_path / "again")
    assert json.loads((tmp_path / "again/usnet.json").read_text())["conversion"] == model.conversion


def test_a_record_that_does_not_fit_is_converted_again(tmp_path: Path, caplog) -> None:
    model = usnet.create_model("torchvision:resnet18", num_classes=10, in_chans=1, input_size=32)
    fake_calibrate(model, [0.25, 0.4])
    usnet.save(model, tmp_path / "ck")
    info = tmp_path / "ck/usnet.json"
    doc = json.loads(info.read_text())
    layers = doc["conversion"]["plan"]["layers"]
    layers["layer1.0.conv1"][2] = [["conv1", 2]]  # twice the channels it has
    info.write_text(json.dumps(doc))
    with caplog.at_level(logging.WARNING, logger="usnet"):
        loaded = usnet.load(tmp_path / "ck")
    assert "does not fit ResNet" in caplog.text and "spans of" in caplog.text
    _same(model, loaded, [1.0, 0.25])
    doc["conversion"]["fingerprint"] = "0" * 32  # other code: no word, converted again
    doc["conversion"]["plan"] = {"version": 99}
    info.write_text(json.dumps(doc))
    _same(model, usnet.load(tmp_path / "ck"), [0.4])
    del doc["conversion"]  # a checkpoint of an older usnet
    info.write_text(json.dumps(doc))
    _same(model, usnet.load(tmp_path / "ck"), [0.4])


def test_the_plan_is_checked_before_it_is_used() -> None:
    model = usnet.create_model("torchvision:resnet18", num_classes=10, input_size=32)
    plan = Plan.from_json(model.conversion["plan"])
    net = folded_copy(torchvision.models.resnet18(num_classes=10))[0]
    check(plan, net)  # fits the plain network it came from
    with pytest.raises(ConvertError, match="conversion plan: it is not a usnet plan"):
        Plan.from_json({"version": 1, "groups": [["a", 8]]})
    bad = model.conversion["plan"] | {"layers": {"fc": ["bn", None, None, True]}}
    with pytest.raises(ConvertError, match="module 'fc': conversion plan: a linear, not a bn"):
        check(Plan.from_json(bad), net)


@pytest.mark.parametrize("which", ["fpn", "audio"])
def test_every_kind_rebuilds_from_its_plan(which: str) -> None:
    from test_convert_kinds import Audio
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    def build() -> torch.nn.Module:
        torch.manual_seed(0)
        if which == "fpn":
            return resnet_fpn_backbone(backbone_name="resnet18", weights=None).eval()
        return Audio().eval()

    x = torch.randn(2, 3, 32, 32) if which == "fpn" else torch.randn(2, 1, 32)
    model = usnet.convert(build(), x)
    again = api.rebuild(build(), model.conversion, (0.25, 1.0), 8, x.shape[1:])
    assert again is not None  # the plan fits: no tracing
    for w in (1.0, 0.25):
        model.train(), again.train()  # batch statistics: no calibration needed
        with torch.no_grad(), usnet.width(model, w), usnet.width(again, w):
            a, b = model(x), again(x)
        for k in a if isinstance(a, dict) else [None]:
            assert torch.equal(a[k], b[k]) if k is not None else torch.equal(a, b)
