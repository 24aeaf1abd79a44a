"""usnet.convert refuses what it cannot slim exactly, naming the module, the op and the way out."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from convert_helpers import Plain
from torch import Tensor, nn

from usnet.convert import ConvertError, convert
from usnet.nn import width_space


class Shuffle(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 16, 1), nn.Conv2d(16, 16, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.a(x)
        n, c, h, w = x.shape
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        return self.b(x).mean((2, 3))


class Split(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 16, 1), nn.Conv2d(8, 8, 1)

    def forward(self, x: Tensor) -> Tensor:
        left, right = self.a(x).chunk(2, dim=1)
        return torch.cat([left, self.b(right)], 1).mean((2, 3))


class Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 16, 1), nn.Conv2d(16, 16, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.a(x)
        return (self.b(x) if x.sum() > 0 else x).mean((2, 3))


class MyConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(16, 16, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight)


class Custom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.mine = nn.Conv2d(3, 16, 1), MyConv()

    def forward(self, x: Tensor) -> Tensor:
        return self.mine(self.a(x)).mean((2, 3))


class HardView(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.fc = nn.Conv2d(3, 16, 1), nn.Linear(16 * 4, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.a(x).view(x.size(0), 64))


class CrossAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.attn = nn.Conv2d(3, 16, 1), nn.MultiheadAttention(16, 2, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        t = self.a(x).flatten(2).transpose(1, 2)
        return self.attn(t, 2 * t, 2 * t)[0].mean(1)


@pytest.mark.parametrize(
    ("cls", "module", "op", "match", "keep"),
    [
        (Shuffle, "", "Tensor.view", "splits the channel dimension", ["a"]),
        (Split, "", "Tensor.chunk", "splits the channel dimension", ["a"]),
        (Custom, "mine", "conv2d", "functional layer", ["a"]),
        (HardView, "", "Tensor.view", "hard-codes the size 64", ["a"]),
        (CrossAttention, "attn", "MultiheadAttention", "cross-attention", ["a"]),
        (Branchy, "", "tracing", "data-dependent control flow", []),
    ],
)
def test_what_cannot_slim_is_refused_with_the_way_out(cls, module, op, match, keep) -> None:
    x = torch.randn(2, 3, 2, 2)
    with pytest.raises(ConvertError, match=match) as info:
        convert(cls(), x)
    error = info.value
    assert isinstance(error, ValueError)
    assert error.module == module and op in error.op and list(error.keep) == keep
    if keep:  # the way out works: those channels stay, the rest converts
        assert f"keep=[{keep[0]!r}]" in str(error)
        # these toy models have nothing left to slim once ``a`` is kept: said, not silent
        with pytest.warns(UserWarning, match=f"nothing of {cls.__name__} slims"):
            model = convert(cls(), x, keep=keep)
        with torch.no_grad():
            assert torch.equal(model(x), cls.__call__(model, x))


def test_an_untraceable_module_can_be_kept_as_one_block() -> None:
    class Outer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.branchy = nn.Conv2d(3, 3, 1), Branchy()
            self.head, self.fc = nn.Linear(16, 32), nn.Linear(32, 10)

        def forward(self, x: Tensor) -> Tensor:
            return self.fc(self.head(self.branchy(self.stem(x))))

    x = torch.randn(2, 3, 4, 4)
    with pytest.raises(ConvertError, match="module 'branchy': tracing") as info:
        convert(Outer(), x)
    assert info.value.keep == ("branchy", "stem")  # every problem at once: its inputs too
    with pytest.raises(ConvertError, match="inputs must not slim.*keep=\\['stem'\\]"):
        convert(Outer(), x, keep=["branchy"])  # a block's inputs come from a slimmable conv
    model = convert(Outer(), x, keep=["branchy", "stem"])
    assert [g.name for g in width_space(model).groups] == ["head"]


def test_batch_norm_without_running_statistics_is_refused_with_the_way_out() -> None:
    x = torch.randn(2, 3, 4, 4)
    net = Plain()
    net.stem[1] = nn.BatchNorm2d(32, track_running_stats=False)
    with pytest.raises(ConvertError, match="module 'stem.1'.*track_running_stats=False") as info:
        convert(net, x)
    assert info.value.keep == ("stem.0",)
    model = convert(net, x, keep=["stem.0"])  # its channels whole: batch statistics are exact
    assert [g.name for g in width_space(model).groups] == ["body.0"]
