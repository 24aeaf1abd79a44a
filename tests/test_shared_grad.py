"""The sandwich step's shared gradient buffers give autograd's gradients, once per step."""

from __future__ import annotations

import contextlib
import copy

import torch
from tiny import tiny_inputs, tiny_model

import usnet.training.step as step_module
from usnet.nn import USBatchNorm, USConv, USLinear, shared_grad
from usnet.tasks.classification.loss import ClassificationLoss
from usnet.training.step import sandwich_step

WIDTHS = [1.0, 0.35, 0.6, 0.8]


class _Plain:
    last = False

    def begin(self, last: bool) -> None:
        self.last = last


def _plain_step(model, x, y, monkeypatch) -> None:
    """The same step with ordinary autograd slicing (no shared buffers): the oracle."""
    with monkeypatch.context() as m:
        m.setattr(step_module, "shared_gradients", lambda: contextlib.nullcontext(_Plain()))
        sandwich_step(model, x, y, WIDTHS, ClassificationLoss())


def test_shared_buffers_give_autograds_gradients(monkeypatch):
    model = tiny_model().train()
    twin = copy.deepcopy(model)
    x, y = tiny_inputs(8), torch.arange(8) % 10
    for _ in range(2):  # the second step accumulates onto existing .grad, as autograd does
        sandwich_step(model, x, y, WIDTHS, ClassificationLoss())
        _plain_step(twin, x, y, monkeypatch)
    for (name, a), b in zip(model.named_parameters(), twin.parameters(), strict=True):
        assert a.grad is not None and b.grad is not None, name
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=1e-7, msg=name)


def test_each_sliced_parameter_gets_one_gradient_per_step_at_the_last_width():
    """So DDP, which reduces on the last (synchronised) backward, sees every gradient there."""
    model = tiny_model().train()
    x, y = tiny_inputs(8), torch.arange(8) % 10
    layers = [m for m in model.modules() if isinstance(m, (USConv, USLinear, USBatchNorm))]
    owned = {id(p) for m in layers for p in m.parameters(recurse=False)}
    sliced = {name: p for name, p in model.named_parameters() if id(p) in owned}
    assert sliced
    arrivals: dict[str, int] = {}

    def count(name: str, grad: torch.Tensor | None) -> None:
        if grad is not None:  # autograd calls hooks with None where a node gave no gradient
            arrivals[name] = arrivals.get(name, 0) + 1

    for name, p in sliced.items():
        p.register_hook(lambda g, name=name: count(name, g))
    before: list[list[str]] = []

    def backward(loss: torch.Tensor) -> None:
        before.append([name for name, p in sliced.items() if p.grad is not None])
        loss.backward()

    sandwich_step(model, x, y, WIDTHS, ClassificationLoss(), backward=backward)
    assert before == [[]] * len(WIDTHS)  # no gradient before the last backward
    assert arrivals == dict.fromkeys(sliced, 1)
    assert all(p.grad is not None for p in sliced.values())


def test_a_parameter_the_last_width_skips_still_gets_its_gradient():
    p = torch.nn.Parameter(torch.randn(6, 4))
    with shared_grad.shared_gradients() as buffers:
        shared_grad.narrow(p, 3, 2).sum().backward()  # not the last width
        buffers.last = True
    assert p.grad is not None
    expected = torch.zeros(6, 4)
    expected[:3, :2] = 1
    torch.testing.assert_close(p.grad, expected)


def test_a_parameter_used_twice_per_width_gets_both_uses_gradients():
    """Two slices of one parameter in one forward (shared weights): both reach the buffer, at
    earlier widths (two leaves) and at the last (the buffer and the second use added by
    autograd), whatever the order of their backward passes."""
    p = torch.nn.Parameter(torch.randn(6, 4))
    plan = [((6, 4), (3, 2)), ((2, 4), (6, 1)), ((3, 3), (5, 4))]  # per width: two slices

    def loss(a: torch.Tensor, b: torch.Tensor, k: int) -> torch.Tensor:
        return (a * (k + 1)).square().sum() + (b * (k + 2)).sum()

    with shared_grad.shared_gradients() as buffers:
        for k, (s1, s2) in enumerate(plan):
            buffers.last = k == len(plan) - 1
            loss(shared_grad.narrow(p, *s1), shared_grad.narrow(p, *s2), k).backward()
    q = torch.nn.Parameter(p.detach().clone())
    for k, (s1, s2) in enumerate(plan):
        loss(q[: s1[0], : s1[1]], q[: s2[0], : s2[1]], k).backward()
    assert p.grad is not None
    torch.testing.assert_close(p.grad, q.grad)
