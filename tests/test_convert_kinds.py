"""usnet.convert on the layer kinds of round two: which channel groups exist and what slims.

Kinds whose slimmable layer is not written yet (Conv1d/3d, ConvTranspose, BatchNorm3d,
GroupNorm(1, C), GroupNormAct, affine InstanceNorm, a grouped conv over a concatenation) are
checked on the analysis side (the groups and spans it finds) and refused with a keep= way out;
the others convert and are checked against the masked original.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import timm.layers
import torch
import torch.nn.functional as F
from convert_helpers import analyse, cbr, check_converted, randomize_norms, spans
from torch import Tensor, nn
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

import usnet
from usnet.convert import ConvertError, convert
from usnet.convert.oracle import difference
from usnet.nn import width_space


class Audio(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.bn, self.b = nn.Conv1d(1, 32, 5), nn.BatchNorm1d(32), nn.Conv1d(32, 64, 5)
        self.fc = nn.Linear(64, 5)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.b(F.relu(self.bn(self.a(x)))).mean(-1))


class Video(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.bn = nn.Conv3d(3, 16, 3, padding=1), nn.BatchNorm3d(16)
        self.b, self.fc = nn.Conv3d(16, 16, 3, padding=1, groups=16), nn.Linear(16, 4)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn(self.a(x)))
        return self.fc((x + self.b(x)).mean((2, 3, 4)))


class Decoder(nn.Module):
    """U-Net style: a transposed conv upsamples, its output is concatenated with a skip."""

    def __init__(self) -> None:
        super().__init__()
        self.down, self.mid = cbr(3, 16, stride=2), cbr(16, 32)
        self.up = nn.ConvTranspose2d(32, 16, 2, stride=2)
        self.out = nn.Conv2d(16 + 3, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(torch.cat([self.up(self.mid(self.down(x))), x], 1))


@pytest.mark.parametrize(
    ("cls", "shape", "want"),
    [
        (Audio, (2, 1, 32), {"a": (None, (("a", 1),)), "b": ((("a", 1),), (("b", 1),))}),
        (Video, (2, 3, 4, 6, 6), {"b": ((("a", 1),), (("a", 1),))}),
        (Decoder, (2, 3, 8, 8), {"up": ((("mid.0", 1),), (("up", 1),))}),
    ],
    ids=["conv1d", "conv3d", "conv_transpose"],
)
def test_conv_1d_3d_and_transposed_convert(cls, shape, want) -> None:
    torch.manual_seed(0)
    x = torch.randn(*shape)
    an, solution = analyse(cls(), x)
    found = spans(an, solution)
    for path, (inp, out) in want.items():
        assert found[path][1:] == (inp, out), path
    original = cls().eval()
    randomize_norms(original)
    model = convert(original, x)
    assert [g.name for g in width_space(model).groups] == [g.name for g in solution.groups.values()]
    check_converted(original, model, x)


class Norms(nn.Module):
    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.conv, self.norm, self.fc = nn.Conv2d(3, 32, 3), norm, nn.Linear(32, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(F.relu(self.norm(self.conv(x))).mean((2, 3)))


def test_group_instance_norms_and_their_subclasses_convert() -> None:
    x = torch.randn(2, 3, 8, 8)
    an, solution = analyse(Norms(nn.GroupNorm(1, 32)), x)
    (spec,) = solution.groups.values()
    assert (spec.name, spec.ratio) == ("conv", 1)  # not "a multiple of 32": it slims
    assert an.over_channels and an.uses["norm"].kind == "gn1"  # a layer norm over channels
    norms = [
        timm.layers.GroupNorm(32, num_groups=4),
        nn.GroupNorm(1, 32),
        timm.layers.GroupNormAct(32, 4),
        nn.InstanceNorm2d(32, affine=True),
        nn.InstanceNorm2d(32),
    ]
    for norm in norms:
        torch.manual_seed(0)
        original = Norms(norm).eval()
        randomize_norms(original)
        model = convert(original, x)
        assert [g.name for g in width_space(model).groups] == ["conv"], norm
        check_converted(original, model, x)


class SuperResolution(nn.Module):
    """PReLU per channel and a sub-pixel upsampler: the conv before it runs 4 x its group."""

    def __init__(self) -> None:
        super().__init__()
        self.head, self.act = nn.Conv2d(3, 32, 3, padding=1), nn.PReLU(32)
        self.up, self.shuffle = nn.Conv2d(32, 32 * 4, 3, padding=1), nn.PixelShuffle(2)
        self.down = nn.PixelUnshuffle(2)
        self.tail = nn.Conv2d(32 * 4, 3, 3, padding=1)
        self.slope = nn.Parameter(torch.tensor([0.1]))  # one slope for all channels

    def forward(self, x: Tensor) -> Tensor:
        return self.tail(
            self.down(F.prelu(self.shuffle(self.up(self.act(self.head(x)))), self.slope))
        )


def test_prelu_and_pixel_shuffle_slim_prefixes() -> None:
    torch.manual_seed(0)
    original = SuperResolution().eval()
    with torch.no_grad():
        original.act.weight.uniform_(-1, 1)
    x = torch.randn(2, 3, 6, 6)
    model = convert(original, x)
    assert [g.name for g in width_space(model).groups] == ["head", "up"]
    check_converted(original, model, x)
    with usnet.width(model, 0.25):
        channels = width_space(model).channels()
        assert model.act.weight.shape == (channels["head"],)
        assert model.up.to_dense().out_channels == 4 * channels["up"]
        assert model.tail.to_dense().in_channels == 4 * channels["up"]


class Multiplier(nn.Module):
    """A depthwise conv with channel multiplier 2 added to a plain conv (PNASNet, FastViT)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 16)
        self.dw, self.pw = nn.Conv2d(16, 32, 3, padding=1, groups=16), nn.Conv2d(16, 32, 1)
        self.bn, self.fc = nn.BatchNorm2d(32), nn.Linear(32, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        return self.fc(F.relu(self.bn(self.dw(x) + self.pw(x))).mean((2, 3)))


def test_a_channel_multiplier_meeting_a_plain_conv_is_a_derived_group() -> None:
    torch.manual_seed(0)
    original = Multiplier().eval()
    randomize_norms(original)
    x = torch.randn(2, 3, 8, 8)
    model = convert(original, x)
    assert [g.name for g in width_space(model).groups] == ["stem.0"]  # pw = 2 x stem
    check_converted(original, model, x)
    with usnet.width(model, 0.5):
        c = width_space(model).channels()["stem.0"]
        assert model.pw.to_dense().out_channels == model.dw.to_dense().out_channels == 2 * c


class CatDepthwise(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 16, 1), nn.Conv2d(3, 24, 1)
        self.dw, self.fc = nn.Conv2d(40, 40, 3, padding=1, groups=40), nn.Linear(40, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.dw(torch.cat([self.a(x), self.b(x)], 1)).mean((2, 3)))


def test_a_depthwise_conv_over_a_concatenation_follows_its_parts() -> None:
    x = torch.randn(2, 3, 8, 8)
    an, solution = analyse(CatDepthwise(), x)
    kind, inp, out = spans(an, solution)["dw"]
    assert kind == "conv_cat" and inp == out == (("a", 1), ("b", 1))
    torch.manual_seed(0)
    original = CatDepthwise().eval()
    check_converted(original, convert(original, x), x)


class GlobalContext(nn.Module):
    """GCNet: a 1-channel attention map over space, a matmul contracting over H*W, a log
    softmax over the outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.mask = cbr(3, 32), nn.Conv2d(32, 1, 1)
        self.transform, self.fc = nn.Conv2d(32, 32, 1), nn.Linear(32, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        n, c, h, w = x.shape
        attention = self.mask(x).view(n, 1, h * w).softmax(-1).unsqueeze(-1)
        context = torch.matmul(x.view(n, 1, c, h * w), attention).view(n, c, 1, 1)
        return F.log_softmax(self.fc((x + self.transform(context)).mean((2, 3))), 1)


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q, self.k = nn.Conv2d(3, 16, 1), nn.Conv2d(3, 16, 1)

    def forward(self, x: Tensor) -> Tensor:
        q, k = self.q(x).flatten(2), self.k(x).flatten(2)
        return (q.transpose(1, 2) @ k).softmax(-1).mean((1, 2))


def test_matmul_over_space_slims_attention_over_channels_is_refused() -> None:
    torch.manual_seed(0)
    original = GlobalContext().eval()
    randomize_norms(original)
    x = torch.randn(2, 3, 6, 6)
    model = convert(original, x)  # the 1-channel map never slims: no refusal for it
    assert [g.name for g in width_space(model).groups] == ["stem.0", "mask"]
    check_converted(original, model, x)
    with pytest.raises(ConvertError, match="sums over the slimmable channels") as info:
        convert(Attention(), x)
    assert set(info.value.keep) == {"q", "k"}


def test_groups_no_wider_than_the_divisor_need_no_refusal() -> None:
    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 32, 1)
            self.fc = nn.Linear(32, 2)

        def forward(self, x: Tensor) -> Tensor:
            y = self.a(x)
            n, c, h, w = y.shape
            y = y.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)  # a shuffle
            return self.fc(self.b(y).mean((2, 3)))

    model = convert(Tiny(), torch.randn(2, 3, 4, 4))  # 8 channels run 8 at every width
    assert width_space(model).channels(0.25)["b"] == 8


class ShuffleUnit(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = cbr(24, 48, groups=2), cbr(48, 48, groups=48)
        self.conv3 = nn.Conv2d(48, 24, 1, groups=2)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv1(x)
        n, c, h, w = y.shape
        y = y.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        return F.relu(x + self.conv3(self.conv2(y)))


def test_shufflenet_v1_is_refused_as_the_docs_promise() -> None:
    net = nn.Sequential(
        cbr(3, 24),
        ShuffleUnit(),
        ShuffleUnit(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(24, 10),
    )
    with pytest.raises(ConvertError, match="Tensor.view: the reshape splits the channel dimension"):
        convert(net, torch.randn(2, 3, 8, 8))


def test_frozen_batch_norm_backbones_slim_their_body() -> None:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        original = resnet_fpn_backbone(backbone_name="resnet18", weights=None).eval()
    with torch.no_grad():
        for m in original.modules():  # frozen statistics away from 0/1, so slips show
            if type(m).__name__ == "FrozenBatchNorm2d":
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.8, 1.2)
    x = torch.randn(2, 3, 64, 64)
    with pytest.warns(UserWarning, match=r"FrozenBatchNorm layer\(s\).*'body.bn1'.*eval mode"):
        model = convert(copy.deepcopy(original), x)
    names = {g.name for g in width_space(model).groups}
    assert {"body.conv1", "body.layer4.0.conv1"} <= names
    assert usnet.macs(model, 0.25) < 0.3 * usnet.macs(model, 1.0)  # 56 % when the body stayed whole
    assert isinstance(model.body.bn1, usnet.nn.USBatchNorm)  # statistics per width, calibrated
    with torch.no_grad():  # the frozen statistics are the full width's
        want, got = original(x), model(x)
        assert all(torch.allclose(want[k], got[k], rtol=1e-5, atol=1e-4) for k in want)
    d64 = copy.deepcopy(original).double()
    assert difference(d64, copy.deepcopy(model).double(), x.double(), 0.25) <= 1e-9


class ECA(nn.Module):
    """Efficient channel attention: a Conv1d over the pooled channels, as a sequence of 1."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.conv, self.fc = cbr(3, 32), nn.Conv1d(1, 1, 3, padding=1), nn.Linear(32, 2)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        y = self.conv(x.mean((2, 3)).unsqueeze(1))  # N x 1 x C: the channels are its length
        return self.fc((x * torch.sigmoid(y).transpose(1, 2).unsqueeze(-1)).mean((2, 3)))


def test_a_conv_over_the_channels_as_a_sequence_is_refused() -> None:
    torch.manual_seed(0)
    original = ECA().eval()
    randomize_norms(original)
    x = torch.randn(2, 3, 6, 6)
    with pytest.raises(ConvertError, match="module 'conv': Conv1d: it reads channels on dim"):
        convert(original, x)  # ECA mixes neighbouring channels: refused, with the way out
    model = convert(original, x, keep=["stem.0"])
    assert width_space(model).channels(0.25) == {"conv": 1}  # a 1-channel Conv1d never slims
    check_converted(original, model, x)


class SizedSE(nn.Module):
    """Squeeze-and-excitation written with sizes read from the tensor (kuangliu-style)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.fc1, self.fc2 = cbr(3, 32), nn.Linear(32, 8), nn.Linear(8, 32)
        self.head = nn.Linear(32, 2)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        b, c, h, w = x.shape
        y = F.adaptive_avg_pool2d(x, 1).view(b, c)
        y = torch.sigmoid(self.fc2(F.relu(self.fc1(y)))).view(b, c, 1, 1)
        x = x * y + x.new_zeros(b, c, h, w)
        return self.head(x.mean((2, 3)) + y.new_zeros((b, c)))


class SizedWrongly(nn.Module):
    """A tensor that does not slim reshaped with the size of channels that do (MaxViT)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.other, self.head = cbr(3, 32), nn.Conv2d(3, 64, 1), nn.Linear(32, 2)

    def forward(self, x: Tensor) -> Tensor:
        y = self.stem(x)
        b, c, h, w = y.shape
        z = self.other(x).view(b, c, -1).mean(-1)  # a narrower c would regroup other's channels
        return self.head(y.mean((2, 3)) + z)


def test_sizes_read_from_slimmable_channels_follow_them_or_are_refused() -> None:
    torch.manual_seed(0)
    original = SizedSE().eval()
    randomize_norms(original)
    x = torch.randn(2, 3, 6, 6)
    model = convert(original, x)  # the views, new_zeros and zeros all follow the stem's group
    assert [g.name for g in width_space(model).groups] == ["stem.0", "fc1"]
    check_converted(original, model, x)
    with pytest.raises(ConvertError, match="it shapes a tensor with the size of slimmable chan"):
        convert(SizedWrongly(), x, keep=["other"])  # would run at a narrow width, silently wrong
    model = convert(SizedWrongly(), x, keep="auto")  # keeps both whole: runs at every width
    with usnet.width(model, 0.25), torch.no_grad():
        model(x)
