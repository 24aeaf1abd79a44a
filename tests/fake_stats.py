"""Random "calibrated" BN statistics, so tests of export and checkpoints need no calibration code."""

from __future__ import annotations

import torch
from torch import nn

import usnet
from usnet.nn import USBatchNorm2d, WidthConfig, width_space

#: Calibrated widths of the checkpoint tests' model: uniform ones and one per-layer assignment.
CHECKPOINT_WIDTHS = [0.35, 0.6, 1.0, {"stem": 0.5, "*": 0.8}]


def fake_calibrate(model: nn.Module, widths: list[WidthConfig], seed: int = 0) -> None:
    """Store random statistics for each width's network, as calibration would, and record it."""
    g = torch.Generator().manual_seed(seed)
    space = width_space(model)
    for w in widths:
        with usnet.width(model, w):
            for bn in model.modules():
                if isinstance(bn, USBatchNorm2d) and bn.get_stats(space.key) is None:
                    c = bn.span.active
                    mean = torch.randn(c, generator=g) * 0.2
                    var = torch.rand(c, generator=g) + 0.5
                    bn.set_stats(space.key, mean, var)
            space.calibrated[usnet.get_width(model)] = space.key


def randomize_affine(model: nn.Module, seed: int = 0) -> None:
    """BN affine parameters away from 1/0 and a larger classifier, so slicing mistakes show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, USBatchNorm2d):
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
            elif isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.in_features**0.5)
                if m.bias is not None:
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
