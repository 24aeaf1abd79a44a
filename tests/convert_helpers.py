"""Shared checks of converted networks: exact at full width, dense export equal at other widths."""

from __future__ import annotations

import copy
import random

import torch
import torch.nn.functional as F
from fake_stats import fake_calibrate
from torch import Tensor, nn

import usnet
from usnet.convert.oracle import difference
from usnet.convert.plan import Plan
from usnet.export import extract
from usnet.nn import USBatchNorm2d, width_space


def randomize_norms(model: nn.Module, seed: int = 0) -> None:
    """Batch/layer norm parameters and running statistics away from 1/0, so slips show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)):
                if getattr(m, "weight", None) is not None:
                    m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                    m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
                if getattr(m, "running_mean", None) is not None:
                    m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=g))
                    m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))


def widths_of(model: nn.Module, seed: int = 0, n: int = 3) -> list:
    """The narrowest width, ``n`` random uniform ones and a random per-group one."""
    rng = random.Random(seed)
    space = width_space(model)
    names = [g.name for g in space.groups]
    widths: list = [space.width_min] + [
        round(rng.uniform(space.width_min, 1.0), 3) for _ in range(n)
    ]
    if names:
        widths.append({name: round(rng.uniform(space.width_min, 1.0), 3) for name in names})
    return widths


def check_converted(
    original: nn.Module, model: nn.Module, x: torch.Tensor, seed: int = 0, n: int = 3
) -> None:
    """Full width equals ``original``; every other width's dense export equals the US model and
    (where it holds) the masked original; training runs (and back-propagates into the original
    weights) at the narrowest width."""
    original.eval()
    model.eval()
    with torch.no_grad():
        want = original(x)
        got = model(x)
    assert want.abs().max() > 1e-3
    assert (got - want).abs().max().item() <= 1e-5
    widths = widths_of(model, seed, n)
    fake_calibrate(model, widths, seed)
    for w in widths:
        dense = extract(model, w)
        assert not any(isinstance(m, USBatchNorm2d) for m in dense.modules())
        with torch.no_grad(), usnet.width(model, w):
            slim = model(x)
            assert (dense(x) - slim).abs().max().item() <= 1e-5, w
            assert slim.shape == want.shape  # the outputs never slim
    assert usnet.get_width(model) == 1.0
    if not Plan.from_json(model.conversion["plan"]).over_channels:
        check_oracle(original, model, x, widths)
    model.train()
    with usnet.width(model, width_space(model).width_min):
        model(torch.cat([x, x + 1])).square().mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    model.zero_grad()
    model.eval()


def check_oracle(original: nn.Module, model: nn.Module, x: torch.Tensor, widths: list) -> None:
    """At each width the converted model computes what the original computes with the channels
    that width drops zeroed (batch norms on batch statistics): an oracle sharing no slicing
    code with the converted layers."""
    xs = torch.cat([x, x.flip(0) + 0.5]) if x.shape[0] < 2 else x
    # in float64: batch statistics of a 1x1 map over 2 samples amplify float32 rounding
    original, model = copy.deepcopy(original).double(), copy.deepcopy(model).double()
    for w in widths:
        assert difference(original, model, xs.double(), w) <= 1e-7, w  # float32 weights


def cbr(cin: int, cout: int, groups: int = 1, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class Plain(nn.Module):
    """Conv-BN-ReLU, pooling, dropout, flatten into a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.body = cbr(3, 32), cbr(32, 64, stride=2)
        self.drop, self.fc = nn.Dropout(0.2), nn.Linear(64, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = F.adaptive_avg_pool2d(self.body(self.stem(x)), 1)
        return self.fc(self.drop(torch.flatten(x, 1)))


def analyse(model: nn.Module, x: torch.Tensor, keep: tuple[str, ...] = ()):  # noqa: ANN201
    """The analysis side alone: the solved analysis of ``model`` (no layers replaced), for kinds
    whose slimmable layers are not written yet. Returns ``(analysis, solution)``."""
    from usnet.convert.analysis import Analysis
    from usnet.convert.report import never_slims
    from usnet.convert.rules import is_leaf
    from usnet.convert.trace import trace_model

    traced = trace_model(model, x, lambda m, _: is_leaf(m), keep)
    an = Analysis(model, frozenset(keep))
    for t in traced.traces:
        an.run(t)
    an.finish()
    return an, an.solver.solve(never_slims(0.25, 8))


def spans(an, solution) -> dict:  # noqa: ANN001
    """Each analysed module's ``(kind, input span, output span)`` over group names (a fixed
    part as its channel count), as the analysis found them."""
    solver, groups = an.solver, solution.groups

    def span(layout):  # noqa: ANN001, ANN202
        if layout is None:
            return None
        parts = solver.segments(layout)
        return tuple((groups[r].name if r in groups else solver.full[r], f) for r, f in parts)

    return {p: (u.kind, span(u.inp), span(u.out)) for p, u in an.uses.items()}
