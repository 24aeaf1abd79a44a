"""A tiny seeded US-MobileNet v2 on 16x16 grey images, and its eval at a width, for the tests of
the eval fast path and of dtypes (a forward takes milliseconds)."""

from __future__ import annotations

import torch

import usnet


def tiny_model(**kw: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return usnet.create_model(
        "us_mobilenet_v2_small",
        input_size=16,
        blocks=((1, 8, 1, 1), (6, 16, 2, 2)),
        last_channels=64,
        **kw,
    )


def tiny_inputs(n: int) -> torch.Tensor:
    return torch.randn(n, 1, 16, 16, generator=torch.Generator().manual_seed(1))


def eval_at(model: torch.nn.Module, x: torch.Tensor, w: float = 0.5) -> torch.Tensor:
    model.eval()
    with usnet.width(model, w), torch.no_grad():
        return model(x)
