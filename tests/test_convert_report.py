"""usnet.convert reports every problem at once, converts with keep="auto", says what stays
whole (with the share of MACs that slims) and words each refusal for its real cause."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from convert_helpers import Plain, cbr
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from usnet.convert import ConvertError, convert
from usnet.nn import width_space


def shuffle(x: Tensor) -> Tensor:
    n, c, h, w = x.shape
    return x.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)


class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.a, self.b = cbr(c, c), cbr(c, c)

    def forward(self, x: Tensor) -> Tensor:
        return self.b(shuffle(self.a(x)))


class Split(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(16, 32, 1)

    def forward(self, x: Tensor) -> Tensor:
        left, right = self.conv(x).chunk(2, 1)
        return left * right


class Mine(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(16, 16, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight)


class Troubled(nn.Module):
    """Three shuffles, a channel split and an unknown layer, in different places."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 16)
        self.one, self.two, self.three = Block(16), Block(16), Block(16)
        self.split, self.mine = Split(), Mine()
        self.head = cbr(16, 32)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = self.three(self.two(self.one(self.stem(x))))
        x = self.split(self.mine(x))
        return self.fc(self.head(x).mean((2, 3)))


def test_every_problem_is_reported_at_once_and_auto_converts_with_their_keep() -> None:
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(ConvertError) as info:
        convert(Troubled(), x)
    error = info.value
    ops = sorted({p.op for p in error.problems})
    assert ops == ["Tensor.chunk", "Tensor.view", "torch.conv2d"], str(error)
    assert len(error.problems) == 5  # three shuffles, the split, the functional conv
    text = str(error)
    assert text.startswith("cannot convert Troubled: 5 operations cannot slim exactly")
    assert 'keep="auto"' in text and all(p.problem in text for p in error.problems)
    keep = list(error.keep)
    model = convert(Troubled(), x, keep=keep)  # the complete way out: one more round is enough
    groups = [g.name for g in width_space(model).groups]
    assert groups == ["stem.0", "one.b.0", "two.b.0", "head.0"]
    with pytest.warns(UserWarning, match=re.escape(f"keep='auto' kept {keep}")) as record:
        auto = convert(Troubled(), x, keep="auto")
    assert [g.name for g in width_space(auto).groups] == groups
    note = str(record[0].message)
    share = float(re.search(r"([\d.]+) % of Troubled's MACs slim", note).group(1))
    with FlopCounterMode(display=False) as counter:
        Troubled()(x)  # an independent count: what reads and writes whole channels only
    flops = {k: sum(v.values()) for k, v in counter.get_flop_counts().items()}
    whole = sum(flops[f"Troubled.{m}"] for m in ("three.b.0", "mine", "split.conv"))
    slim = flops["Global"] - whole
    assert share == pytest.approx(100 * slim / flops["Global"], abs=0.06)


def test_whatever_leaves_part_of_a_network_whole_says_so() -> None:
    class FixedOperand(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.body, self.fc = cbr(3, 16), cbr(16, 32), nn.Linear(32, 10)

        def forward(self, x: Tensor) -> Tensor:
            x = self.stem(x) + torch.ones(1, 16, 1, 1)  # a constant of 16 channels
            return self.fc(self.body(x).mean((2, 3)))

    x = torch.randn(2, 3, 8, 8)
    with pytest.warns(UserWarning, match=r"of FixedOperand's MACs slim; whole: 'stem.0' \(.*"
                      r"operator.add meets a tensor of fixed size\)"):  # fmt: skip
        convert(FixedOperand(), x)
    with pytest.warns(UserWarning, match=r"whole: 'fc' \(.*'body.0' is kept\)"):
        convert(Plain(), x, keep=["body.0"])
    with pytest.warns(UserWarning, match="nothing of Mine slims.*no slimmable channels reach it"):
        convert(Mine(), torch.randn(2, 16, 4, 4))  # an unknown layer on the input: said


def test_messages_name_the_real_cause() -> None:
    class Ratio(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(16, 16, 1)

        def forward(self, x: Tensor) -> Tensor:
            return self.conv(x)[:, : int(x.size(1) * 0.5)]

    class Outer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.ratio, self.fc = cbr(3, 16), Ratio(), nn.Linear(8, 2)

        def forward(self, x: Tensor) -> Tensor:
            return self.fc(self.ratio(self.stem(x)).mean((2, 3)))

    x = torch.randn(2, 3, 4, 4)
    with pytest.raises(ConvertError, match=r"module 'ratio': tracing: Python computes with a "
                       r"tensor's size at test_convert_report.py:\d+: return self.conv") as info:  # fmt: skip
        convert(Outer(), x)
    assert info.value.keep == ("ratio", "stem.0")

    class MyGroupNorm(nn.GroupNorm):
        def forward(self, x: Tensor) -> Tensor:
            return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps) * 2

    net = nn.Sequential(cbr(3, 16), MyGroupNorm(4, 16), nn.AdaptiveAvgPool2d(1))
    with pytest.raises(ConvertError, match="MyGroupNorm subclasses nn.GroupNorm with a forward"):
        convert(net, x)

    class Ratios(nn.Module):  # 3 channels per channel of a 16-group against 2 of a 24-group
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 16, 1), nn.Conv2d(3, 24, 1)
            self.da = nn.Conv2d(16, 48, 3, padding=1, groups=16)
            self.db = nn.Conv2d(24, 48, 3, padding=1, groups=24)

        def forward(self, x: Tensor) -> Tensor:
            return (self.da(self.a(x)) + self.db(self.b(x))).mean((1, 2, 3))

    with pytest.raises(ConvertError, match="3 entries per channel of a group of 16 with one of 2"):
        convert(Ratios(), x)

    class Mixing(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.fc = nn.Conv2d(3, 16, 1), nn.Linear(16, 2)

        def forward(self, x: Tensor) -> Tensor:
            y = self.a(x)
            return self.fc(
                (y.roll(1, 1) + torch.index_select(y, 1, torch.arange(8, 16).repeat(2))).mean(
                    (2, 3)
                )
            )

    with pytest.raises(ConvertError) as info:
        convert(Mixing(), x)
    problems = " ".join(p.problem for p in info.value.problems)
    assert "it does not give the leading half of its result (it mixes channels)" in problems
    assert "on the leading half of its channels it fails (RuntimeError" in problems


def test_keep_is_checked() -> None:
    x = torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match="keep must be module names or 'auto', got 3"):
        convert(Plain(), x, keep=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="keep: 3 is not a module name"):
        convert(Plain(), x, keep=[3])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="keep: 'autoo' is not a module of Plain"):
        convert(Plain(), x, keep=["autoo"])
