"""usnet.convert on hand-made networks: one per data-flow case, and the refusals."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from convert_helpers import Plain, cbr, check_converted, randomize_norms
from fake_stats import fake_calibrate
from torch import Tensor, nn
from torchvision.models.convnext import LayerNorm2d
from torchvision.ops import StochasticDepth

import usnet
from usnet.convert import convert
from usnet.export import extract
from usnet.nn import width_space


class Grouped(nn.Module):
    """ResNeXt-style grouped conv (group width 8) and a depthwise conv."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.grouped = cbr(3, 64), cbr(64, 64, groups=8)
        self.dw, self.pw = cbr(64, 64, groups=64), cbr(64, 40)
        self.fc = nn.Linear(40, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pw(self.dw(self.grouped(self.stem(x))))
        return self.fc(x.mean((2, 3)))


class ResidualNet(nn.Module):
    """Residual adds (one group for both sides) with stochastic depth in the branch."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 32)
        self.block1 = nn.Sequential(cbr(32, 48), nn.Conv2d(48, 32, 1), nn.BatchNorm2d(32))
        self.block2 = nn.Sequential(cbr(32, 24), nn.Conv2d(24, 32, 1), nn.BatchNorm2d(32))
        self.drop = StochasticDepth(0.2, "row")
        self.fc = nn.Linear(32, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        x = F.relu(x + self.drop(self.block1(x)))
        x = x + self.block2(x)
        return self.fc(x.mean((2, 3)))


class DenseNetLike(nn.Module):
    """Concatenations: BN and conv over the composite of earlier groups (DenseNet)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 32)
        self.layer1 = nn.Sequential(nn.BatchNorm2d(32), nn.ReLU(), nn.Conv2d(32, 16, 3, padding=1))
        self.layer2 = nn.Sequential(nn.BatchNorm2d(48), nn.ReLU(), nn.Conv2d(48, 16, 3, padding=1))
        self.norm = nn.BatchNorm2d(64)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        x = torch.cat([x, self.layer1(x)], 1)
        x = torch.cat([x, self.layer2(x)], 1)
        return self.fc(F.relu(self.norm(x)).mean((2, 3)))


class SENet(nn.Module):
    """Squeeze-and-excitation: a gate of the block's channels; its reduced width slims apart."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 64)
        self.reduce, self.expand = nn.Conv2d(64, 16, 1), nn.Conv2d(16, 64, 1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        gate = torch.sigmoid(self.expand(F.relu(self.reduce(x.mean((2, 3), keepdim=True)))))
        return self.fc((x * gate).mean((2, 3)))


class VGGLike(nn.Module):
    """A spatial map flattened channel-major into a linear layer (VGG, AlexNet)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(cbr(3, 32), nn.MaxPool2d(2), cbr(32, 48))
        self.pool = nn.AdaptiveAvgPool2d(3)
        self.classifier = nn.Sequential(
            nn.Linear(48 * 9, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 10)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class ConvNeXtLike(nn.Module):
    """Channels-last layer norm and linears between permutes, a per-channel layer scale, a
    channels-first layer norm (ConvNeXt)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 4, 4), LayerNorm2d(32))
        self.dw = nn.Conv2d(32, 32, 7, padding=3, groups=32)
        self.norm = nn.LayerNorm(32)
        self.mlp = nn.Sequential(nn.Linear(32, 128), nn.GELU(), nn.Linear(128, 32))
        self.gamma = nn.Parameter(torch.rand(32) + 0.5)
        self.head = nn.Sequential(nn.LayerNorm(32), nn.Linear(32, 10))

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        y = self.mlp(self.norm(self.dw(x).permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        x = x + y * self.gamma.reshape(1, -1, 1, 1)
        return self.head(x.mean((2, 3)))


class GroupNormNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.gn = nn.Conv2d(3, 32, 3), nn.GroupNorm(4, 32)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(F.relu(self.gn(self.conv(x))).mean((2, 3)))


CASES = [Plain, Grouped, ResidualNet, DenseNetLike, SENet, VGGLike, ConvNeXtLike, GroupNormNet]


@pytest.mark.parametrize("cls", CASES, ids=lambda c: c.__name__)
def test_each_data_flow_case_is_exact(cls: type[nn.Module]) -> None:
    torch.manual_seed(0)
    original = cls().eval()
    randomize_norms(original)
    x = torch.randn(2, 3, 24, 24)
    model = convert(original, x)
    assert isinstance(model, cls) and model.input_size == (3, 24, 24)
    assert width_space(model).groups  # something slims
    check_converted(original, model, x)


def group(model: nn.Module, name: str) -> tuple[int, int]:
    g = next(g for g in width_space(model).groups if g.name == name)
    return g.full, g.ratio


def test_groups_follow_the_data_flow() -> None:
    x = torch.randn(2, 3, 16, 16)
    res = convert(ResidualNet(), x)  # both sides of each add: the stem's group
    assert [g.name for g in width_space(res).groups] == ["stem.0", "block1.0.0", "block2.0.0"]
    grouped = convert(Grouped(), x)  # a grouped conv keeps its group width: a ratio
    assert group(grouped, "stem.0") == (64, 8)
    channels = width_space(grouped).channels(0.3)
    assert channels["stem.0"] % 8 == 0 and channels["stem.0"] < 64
    se = convert(SENet(), x)  # the reduced width is a group of its own
    assert [g.name for g in width_space(se).groups] == ["stem.0", "reduce"]
    vgg = convert(VGGLike(), x)  # the flattened map is the conv's group x H*W
    assert vgg.classifier[0].in_span.segments[0][2] == 9
    with usnet.width(vgg, 0.5):
        assert vgg.classifier[0].in_span.active == 9 * width_space(vgg).channels()["features.2.0"]
    dense = convert(DenseNetLike(), x)  # a concatenation gathers its parts' active channels
    span = dense.norm.span
    assert span.names() == ["stem.0", "layer1.2", "layer2.2"]
    with usnet.width(dense, 0.25):
        assert span.active == 8 + 8 + 8
        counts = width_space(dense).active
        assert span.positions(counts, torch.device("cpu")).tolist()[8:10] == [32, 33]


def test_image_channels_classifier_and_kept_modules_do_not_slim() -> None:
    x = torch.randn(2, 3, 16, 16)
    model = convert(Plain(), x, keep=["body.0"])
    assert [g.name for g in width_space(model).groups] == ["stem.0"]
    with usnet.width(model, 0.25):
        assert model.stem[0].to_dense().in_channels == 3
        assert model.body[0].to_dense().out_channels == 64
        assert type(model.fc) is nn.Linear  # nothing of it slims: left as it was


def test_layer_norm_normalises_over_the_active_channels() -> None:
    model = convert(ConvNeXtLike(), torch.randn(2, 3, 16, 16))
    with usnet.width(model, 0.25):
        c = width_space(model).channels()["stem.0"]
        x = torch.randn(2, 4, 4, c)
        want = F.layer_norm(x, (c,), model.norm.weight[:c], model.norm.bias[:c])
        assert torch.allclose(model.norm(x), want)
        assert model.gamma.shape == (c,)  # the layer scale reads as its active channels


def test_divisor_and_full_sizes_that_are_no_multiple_of_it() -> None:
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 99, 1), nn.Conv2d(99, 216, 1)
            self.c = nn.Conv2d(216, 216, 3, padding=1, groups=9)  # group width 24
            self.fc = nn.Linear(216, 10)

        def forward(self, x: Tensor) -> Tensor:
            return self.fc(self.c(self.b(self.a(x))).mean((2, 3)))

    x = torch.randn(2, 3, 8, 8)
    space = width_space(convert(Odd(), x))
    assert space.channels(1.0) == {"a": 99, "b": 216}  # the full width is the original network
    assert space.channels(0.45) == {"a": 48, "b": 96}  # whole groups of 24
    assert space.channels(0.97) == {"a": 96, "b": 216}
    four = width_space(convert(Odd(), x, divisor=4))
    assert four.channels(0.45) == {"a": 44, "b": 96}


def test_original_is_left_alone_and_arguments_are_checked() -> None:
    original = Plain()
    before = {k: v.clone() for k, v in original.state_dict().items()}
    model = convert(original, torch.randn(2, 3, 16, 16))
    assert model is not original and not hasattr(original, "width_space")
    assert all(torch.equal(v, original.state_dict()[k]) for k, v in before.items())
    x = torch.randn(2, 3, 16, 16)
    with pytest.raises(ValueError, match="width_range must be"):
        convert(Plain(), x, width_range=(0.25, 1.5))
    with pytest.raises(ValueError, match="keep: 'stem.9' is not a module of Plain; did you mean"):
        convert(Plain(), x, keep=["stem.9"])
    with pytest.raises(ValueError, match="example_input must be a tensor"):
        convert(Plain(), [x])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="already a US model"):
        convert(model, x)
    with pytest.warns(UserWarning, match="nothing of Sequential slims"):
        convert(nn.Sequential(nn.Conv2d(3, 4, 1)), x)


def test_calibration_and_batch_norm_over_a_linear() -> None:
    torch.manual_seed(0)
    model = convert(VGGLike(), torch.randn(2, 3, 12, 12))
    batches = [torch.randn(8, 3, 12, 12) for _ in range(2)]
    usnet.calibrate(model, batches, widths=[0.4])
    assert usnet.is_calibrated(model, 0.4) and usnet.is_calibrated(model, 1.0)
    model.eval()
    fake_calibrate(model, [0.6])
    dense = extract(model, 0.6)
    assert isinstance(dense.classifier[1], nn.BatchNorm1d)
    with torch.no_grad(), usnet.width(model, 0.6):
        assert torch.allclose(model(batches[0]), dense(batches[0]), atol=1e-5)


class AuxNet(nn.Module):
    """An auxiliary head that only training runs (GoogLeNet, Inception v3)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.fc = cbr(3, 32), nn.Linear(32, 10)
        self.aux = nn.Sequential(nn.Conv2d(32, 16, 1), nn.BatchNorm2d(16), nn.ReLU())
        self.aux_fc = nn.Linear(16, 10)

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        x = self.stem(x)
        out = self.fc(x.mean((2, 3)))
        if self.training:
            return out, self.aux_fc(self.aux(x).mean((2, 3)))
        return out


def test_training_only_branches_are_converted_and_need_no_calibration() -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 3, 8, 8)
    model = convert(AuxNet(), x)
    assert [g.name for g in width_space(model).groups] == ["stem.0", "aux.0"]
    assert not isinstance(model.aux[1], usnet.nn.USBatchNorm2d)  # eval never reaches it
    usnet.calibrate(model, [x], widths=[0.5], method="single_pass")
    assert usnet.is_calibrated(model, 0.5)
    model.train()
    with usnet.width(model, 0.25):
        out, aux = model(x)
        assert out.shape == aux.shape == (4, 10)
    model.eval()
    dense = extract(model, 0.5)
    with torch.no_grad(), usnet.width(model, 0.5):
        assert torch.equal(model(x), dense(x))
