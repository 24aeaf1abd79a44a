"""usnet.convert on real torchvision and timm networks; model sources; checkpoints; recipes."""

from __future__ import annotations

import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from convert_helpers import check_converted, randomize_norms
from fake_stats import fake_calibrate
from safetensors.torch import save_file
from torch import nn

import usnet
from usnet.cli import main
from usnet.config import ConfigError, build_config
from usnet.nn import width_space
from usnet.tasks.classification import TrainConfig


def _torchvision(name: str) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torchvision.models.get_model(name, num_classes=10)


@pytest.mark.parametrize(
    ("build", "side"),
    [
        (lambda: _torchvision("resnet18"), 32),
        (lambda: _torchvision("mobilenet_v3_small"), 32),
        (lambda: _torchvision("densenet121"), 32),
        (lambda: timm.create_model("mobilenetv3_small_050", num_classes=10), 32),
    ],
    ids=["resnet18", "mobilenet_v3_small", "densenet121", "timm-mobilenetv3_small_050"],
)
def test_real_networks_are_exact(build, side: int) -> None:
    torch.manual_seed(0)
    original = build().eval()
    randomize_norms(original)
    x = torch.randn(2, 3, side, side)
    model = usnet.convert(original, x)
    check_converted(original, model, x, n=1)  # the narrowest, a random and a per-group width
    assert usnet.macs(model, 0.25) < usnet.macs(model, 1.0) / 3


def test_resnet18_groups_and_costs() -> None:
    original = torchvision.models.resnet18()
    model = usnet.convert(original, torch.randn(1, 3, 32, 32))
    names = [g.name for g in width_space(model).groups]
    assert names[:3] == ["conv1", "layer1.0.conv1", "layer1.1.conv1"]  # the stem's group: adds
    assert len(names) == 12
    assert usnet.macs(model, 1.0, input_size=224) == 1_814_073_344  # torchvision's 1.81 GMACs
    assert usnet.params(model, 1.0) == sum(p.numel() for p in original.parameters())


def test_create_model_from_torchvision_and_checkpoint_round_trip(tmp_path: Path) -> None:
    model = usnet.create_model(
        "torchvision:resnet18", num_classes=10, in_chans=1, input_size=32, width_min=0.25
    )
    assert model.arch == "torchvision:resnet18" and model.input_size == (1, 32, 32)
    assert model.arch_kwargs == dict(num_classes=10, in_chans=1, input_size=32, width_min=0.25)
    assert model.task == "classification" and model.conv1.in_channels == 1
    fake_calibrate(model, [0.5])
    usnet.save(model, tmp_path / "ckpt")
    loaded = usnet.load(tmp_path / "ckpt")
    x = torch.randn(2, 1, 32, 32)
    model.eval()
    with torch.no_grad(), usnet.width(model, 0.5), usnet.width(loaded, 0.5):
        assert torch.equal(model(x), loaded(x))
    assert usnet.is_calibrated(loaded, 1.0) and usnet.is_calibrated(loaded, 0.5)


def test_create_model_from_timm() -> None:
    model = usnet.create_model("timm:resnet10t", num_classes=5, in_chans=1, input_size=32)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 5)
    assert model.arch == "timm:resnet10t" and width_space(model).groups


def test_weights_file_starts_from_pretrained_weights(tmp_path: Path) -> None:
    torch.manual_seed(0)
    original = _torchvision("resnet18")  # stands for a pretrained 10-class RGB network
    state = original.state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "w.safetensors")
    torch.save({"state_dict": state}, tmp_path / "w.pth")
    for file in ("w.safetensors", "w.pth"):
        with pytest.warns(UserWarning, match="skipped \\['fc.bias', 'fc.weight'\\]"):
            model = usnet.create_model(
                "torchvision:resnet18", num_classes=3, in_chans=1, input_size=32,
                weights=str(tmp_path / file),
            )  # fmt: skip
        assert "weights" not in model.arch_kwargs  # the checkpoint holds the weights
        assert torch.equal(model.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])
        assert torch.allclose(model.conv1.weight, state["conv1.weight"].sum(1, keepdim=True))
    with pytest.raises(ValueError, match="weights 'nowhere.pth': no such file"):
        usnet.create_model("torchvision:resnet18", weights="nowhere.pth")


def test_own_network_by_import_path(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "my_nets.py").write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn
            import usnet

            class Net(nn.Module):
                def __init__(self, num_classes=10, width=32):
                    super().__init__()
                    self.conv = nn.Conv2d(3, width, 3)
                    self.bn = nn.BatchNorm2d(width)
                    self.fc = nn.Linear(width, num_classes)

                def forward(self, x):
                    return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))

            @usnet.model_source
            def build(num_classes=10):
                return Net(num_classes, width=48)

            def unmarked():
                return Net()
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    model = usnet.create_model("my_nets:Net", num_classes=4, width=40, input_size=16)
    assert [g.full for g in width_space(model).groups] == [40]
    assert usnet.create_model("my_nets:build", input_size=16).fc.in_features == 48
    usnet.save(model, tmp_path / "ckpt")
    assert usnet.load(tmp_path / "ckpt").arch_kwargs["width"] == 40
    assert usnet.is_known_model("my_nets:Net") and usnet.is_known_model("torchvision:resnet18")
    assert not usnet.is_known_model("torchvision:resnet19")
    with pytest.raises(ValueError, match="'unmarked' is neither an nn.Module class nor a function"):
        usnet.create_model("my_nets:unmarked")
    with pytest.raises(ValueError, match="takes no 'in_chans' argument"):
        usnet.create_model("my_nets:build", in_chans=1)
    sys.modules.pop("my_nets", None)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(tmp_path)])
    with pytest.raises(ValueError, match="module 'my_nets' cannot be imported"):
        usnet.load(tmp_path / "ckpt", trust_code=True)  # the source cannot be rebuilt: said so


def test_recipes_and_cli_take_source_names(capsys) -> None:
    data = {"model": {"name": "torchvision:resnet18", "kwargs": {"width_min": 0.25}}}
    assert build_config(TrainConfig, data).model.name == "torchvision:resnet18"
    with pytest.raises(ConfigError, match="model.name"):
        build_config(TrainConfig, {"model": {"name": "torchvision:resnet19"}})
    argv = ["profile", "torchvision:resnet18", "--widths", "0.25,1.0", "--input-size", "32"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "torchvision:resnet18: input 3x32x32, 2 widths" in out and "37.52" in out
    assert main(["profile", "torchvision:resnet19"]) == 2
    assert "did you mean resnet18" in capsys.readouterr().err
