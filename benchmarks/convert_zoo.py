"""Small CIFAR-style networks written the way users write them, for the coverage table.

Each family is here in the form its papers describe (32 x 32 inputs, 10 classes, few blocks so
a conversion takes a second): plain VGG, ResNet (basic blocks, projection shortcuts), pre-
activation ResNet, DenseNet (bottlenecks, transitions), ResNeXt (grouped 3x3), MobileNet v1
(depthwise separable) and v2 (inverted residuals), ShuffleNet v1 (grouped 1x1 convs and a channel
shuffle) and v2 (channel split and shuffle), SENet (squeeze-and-excitation), a dual-path network
(DPN: a residual part added and a dense part concatenated, split by slicing) and DLA (trees of
blocks aggregated by a concatenating root). Written for usnet's benchmark, not copied.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def cbr(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: bool = True):
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if act else nn.Sequential(*layers)


class Head(nn.Module):
    def __init__(self, cin: int, classes: int = 10) -> None:
        super().__init__()
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class VGG(nn.Module):
    def __init__(self, cfg: tuple = (32, "M", 64, "M", 128, 128, "M", 256, 256, "M")) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = 3
        for v in cfg:
            layers += [nn.MaxPool2d(2)] if v == "M" else [cbr(c, v)]
            c = v if v != "M" else c
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c * 2 * 2, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).view(x.size(0), -1))


class Basic(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(cbr(cin, cout, stride=stride), cbr(cout, cout, act=False))
        self.short = nn.Sequential()
        if stride != 1 or cin != cout:
            self.short = cbr(cin, cout, 1, stride, act=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.body(x) + self.short(x))


class ResNet(nn.Module):
    def __init__(self, widths: tuple[int, ...] = (32, 64, 128), block: type = Basic) -> None:
        super().__init__()
        self.stem = cbr(3, widths[0])
        stages, c = [], widths[0]
        for i, w in enumerate(widths):
            stages += [block(c, w, 1 if i == 0 else 2), block(w, w)]
            c = w
        self.stages = nn.Sequential(*stages)
        self.head = Head(c)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.stages(self.stem(x)))


class PreAct(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(x))
        short = self.short(out) if self.short is not None else x
        return self.conv2(F.relu(self.bn2(self.conv1(out)))) + short


class ResNeXtBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1, cardinality: int = 8) -> None:
        super().__init__()
        mid = cout // 2
        self.body = nn.Sequential(
            cbr(cin, mid, 1), cbr(mid, mid, 3, stride, cardinality), cbr(mid, cout, 1, act=False)
        )
        self.short = (
            nn.Identity() if stride == 1 and cin == cout else cbr(cin, cout, 1, stride, act=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.body(x) + self.short(x))


class SEBlock(Basic):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__(cin, cout, stride)
        self.fc1, self.fc2 = nn.Conv2d(cout, cout // 4, 1), nn.Conv2d(cout // 4, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        out = self.body(x)
        w = torch.sigmoid(self.fc2(F.relu(self.fc1(F.avg_pool2d(out, out.size(2))))))
        return F.relu(out * w + self.short(x))


class DenseNet(nn.Module):
    def __init__(self, growth: int = 12, blocks: tuple[int, ...] = (4, 4, 4)) -> None:
        super().__init__()
        c = 2 * growth
        self.stem = nn.Conv2d(3, c, 3, padding=1, bias=False)
        stages: list[nn.Module] = []
        for i, n in enumerate(blocks):
            for _ in range(n):
                stages.append(Dense(c, growth))
                c += growth
            if i < len(blocks) - 1:
                stages.append(
                    nn.Sequential(
                        nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c // 2, 1), nn.AvgPool2d(2)
                    )
                )
                c //= 2
        self.stages = nn.Sequential(*stages)
        self.norm, self.head = nn.BatchNorm2d(c), Head(c)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(F.relu(self.norm(self.stages(self.stem(x)))))


class Dense(nn.Module):
    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, 4 * growth, 1, bias=False)
        self.bn2, self.conv2 = (
            nn.BatchNorm2d(4 * growth),
            nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(F.relu(self.bn2(self.conv1(F.relu(self.bn1(x))))))
        return torch.cat([out, x], 1)


class MobileNetV1(nn.Module):
    def __init__(self, cfg: tuple = (64, (128, 2), 128, (256, 2), 256, (512, 2), 512)) -> None:
        super().__init__()
        layers, c = [cbr(3, 32)], 32
        for v in cfg:
            out, stride = v if isinstance(v, tuple) else (v, 1)
            layers += [cbr(c, c, 3, stride, groups=c), cbr(c, out, 1)]
            c = out
        self.features, self.head = nn.Sequential(*layers), Head(c)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class Inverted(nn.Module):
    def __init__(self, cin: int, cout: int, expansion: int, stride: int) -> None:
        super().__init__()
        mid = cin * expansion
        self.conv = nn.Sequential(
            cbr(cin, mid, 1), cbr(mid, mid, 3, stride, mid), cbr(mid, cout, 1, act=False)
        )
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        cfg = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 2, 2), (6, 96, 1, 1)]
        layers, c = [cbr(3, 32)], 32
        for t, out, n, s in cfg:
            for i in range(n):
                layers.append(Inverted(c, out, t, s if i == 0 else 1))
                c = out
        layers.append(cbr(c, 320, 1))
        self.features, self.head = nn.Sequential(*layers), Head(320)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def shuffle(x: Tensor, groups: int) -> Tensor:
    n, c, h, w = x.size()
    return x.view(n, groups, c // groups, h, w).permute(0, 2, 1, 3, 4).reshape(n, c, h, w)


class ShuffleV1Unit(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, groups: int) -> None:
        super().__init__()
        self.stride, self.groups = stride, groups
        mid = cout // 4
        out = cout - cin if stride == 2 else cout
        g = 1 if cin == 24 else groups
        self.conv1 = cbr(cin, mid, 1, groups=g)
        self.conv2 = cbr(mid, mid, 3, stride, groups=mid, act=False)
        self.conv3 = cbr(mid, out, 1, groups=groups, act=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv3(self.conv2(shuffle(self.conv1(x), self.groups)))
        if self.stride == 2:
            return F.relu(torch.cat([out, F.avg_pool2d(x, 3, 2, 1)], 1))
        return F.relu(out + x)


class ShuffleNetV1(nn.Module):
    def __init__(self, groups: int = 2, widths: tuple[int, ...] = (96, 192, 384)) -> None:
        super().__init__()
        self.stem, c = cbr(3, 24, 1), 24
        units = []
        for w in widths:
            units += [ShuffleV1Unit(c, w, 2, groups), ShuffleV1Unit(w, w, 1, groups)]
            c = w
        self.units, self.head = nn.Sequential(*units), Head(c)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.units(self.stem(x)))


class ShuffleV2Unit(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        half = c // 2
        self.branch = nn.Sequential(
            cbr(half, half, 1), cbr(half, half, 3, groups=half, act=False), cbr(half, half, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        a, b = x.chunk(2, dim=1)
        return shuffle(torch.cat([a, self.branch(b)], 1), 2)


class ShuffleNetV2(nn.Module):
    def __init__(self, c: int = 64) -> None:
        super().__init__()
        self.stem = cbr(3, c, stride=2)
        self.units = nn.Sequential(*(ShuffleV2Unit(c) for _ in range(3)))
        self.head = Head(c)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.units(self.stem(x)))


class DualPath(nn.Module):
    def __init__(self, cin: int, mid: int, out: int, dense: int, stride: int, first: bool) -> None:
        super().__init__()
        self.out, self.first = out, first
        self.body = nn.Sequential(
            cbr(cin, mid, 1),
            cbr(mid, mid, 3, stride, groups=8),
            cbr(mid, out + dense, 1, act=False),
        )
        self.short = cbr(cin, out + dense, 1, stride, act=False) if first else None

    def forward(self, x: Tensor) -> Tensor:
        y = self.body(x)
        x = self.short(x) if self.short is not None else x
        d = self.out
        return F.relu(torch.cat([x[:, :d] + y[:, :d], x[:, d:], y[:, d:]], 1))


class DPN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 32)
        blocks, c = [], 32
        for i, (mid, out, dense) in enumerate(((32, 64, 16), (64, 128, 32))):
            blocks.append(DualPath(c, mid, out, dense, 1 if i == 0 else 2, True))
            c = out + 2 * dense
            blocks.append(DualPath(c, mid, out, dense, 1, False))
            c += dense
        self.blocks, self.head = nn.Sequential(*blocks), Head(c)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.stem(x)))


class Root(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = cbr(cin, cout, 1)

    def forward(self, *xs: Tensor) -> Tensor:
        return self.conv(torch.cat(xs, 1))


class Tree(nn.Module):
    """DLA's aggregation: two blocks (or subtrees) whose outputs a root conv joins."""

    def __init__(self, cin: int, cout: int, level: int, stride: int) -> None:
        super().__init__()
        self.left: nn.Module
        self.right: nn.Module
        if level == 1:
            self.left, self.right = Basic(cin, cout, stride), Basic(cout, cout)
        else:
            self.left, self.right = (
                Tree(cin, cout, level - 1, stride),
                Tree(cout, cout, level - 1, 1),
            )
        self.root = Root(2 * cout, cout)

    def forward(self, x: Tensor) -> Tensor:
        a = self.left(x)
        return self.root(a, self.right(a))


class DLA(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 32)
        self.trees = nn.Sequential(Tree(32, 64, 1, 2), Tree(64, 128, 2, 2))
        self.head = Head(128)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.trees(self.stem(x)))


ZOO: dict[str, Callable[[], nn.Module]] = {
    "vgg": VGG,
    "resnet": ResNet,
    "preact_resnet": lambda: ResNet(block=PreAct),
    "densenet": DenseNet,
    "resnext": lambda: ResNet((64, 128, 256), ResNeXtBlock),
    "mobilenet_v1": MobileNetV1,
    "mobilenet_v2": MobileNetV2,
    "shufflenet_v1": ShuffleNetV1,
    "shufflenet_v2": ShuffleNetV2,
    "senet": lambda: ResNet(block=SEBlock),
    "dpn": DPN,
    "dla": DLA,
}
