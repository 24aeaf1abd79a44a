"""The training step and its parts: what the sandwich rule trains, what distillation changes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import usnet
from usnet.config import ScheduleConfig
from usnet.tasks.classification.loss import ClassificationLoss, soft_cross_entropy
from usnet.training import sample_widths
from usnet.training.optim import lr_factor, param_groups
from usnet.training.step import sandwich_step


def _model():
    torch.manual_seed(0)
    return usnet.create_model(
        "us_mobilenet_v2_small", input_size=16, blocks=((1, 8, 1, 1), (6, 16, 2, 2)), last_channels=64
    ).train()


def _batch(n=8):
    g = torch.Generator().manual_seed(3)
    return torch.randn(n, 1, 16, 16, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_sandwich_rule_trains_both_extremes_and_random_widths_in_between():
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a = sample_widths("sandwich", 0.35, 1.0, 4, generator=g1)
    assert a[:2] == [1.0, 0.35] and len(a) == 4 and all(0.35 <= w <= 1.0 for w in a[2:])
    assert a == sample_widths("sandwich", 0.35, 1.0, 4, generator=g2)  # same seed, same widths
    assert a[2:] != sample_widths("sandwich", 0.35, 1.0, 4, generator=g1)[2:]
    r = sample_widths("random", 0.25, 1.0, 3, generator=g1)
    assert len(r) == 3 and 1.0 not in r
    assert sample_widths("switches", 0.25, 1.0, widths=[0.5, 1.0, 0.25]) == [1.0, 0.5, 0.25]
    assert sample_widths("fixed", 0.25, 1.0, widths=[0.5]) == [0.5]
    with pytest.raises(ValueError, match="width sampling 'sandwhich' is unknown"):
        sample_widths("sandwhich", 0.25, 1.0)
    with pytest.raises(ValueError, match="needs a list of widths"):
        sample_widths("fixed", 0.25, 1.0)


@pytest.mark.parametrize("distill", [True, False])
def test_inplace_distillation_switch_changes_the_narrow_widths_loss(distill):
    model, (x, y) = _model(), _batch()
    widths = [1.0, 0.35, 0.6]
    parts = sandwich_step(model, x, y, widths, ClassificationLoss(), inplace_distillation=distill)
    losses = [p["loss"] for p in parts]
    with torch.no_grad():
        with usnet.width(model, 1.0):
            teacher = F.softmax(model(x), dim=-1)
        for w, loss in zip(widths, losses, strict=True):
            with usnet.width(model, w):
                out = model(x)
            if w == 1.0 or not distill:
                expected = F.cross_entropy(out, y)
            else:
                expected = soft_cross_entropy(out, teacher)
            torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(F.cross_entropy(out, y), soft_cross_entropy(out, teacher))


def test_one_teacher_rule_the_largest_width_trained_first():
    """Distillation only from the largest width trained first; without it, labels for all."""
    model, (x, y) = _model(), _batch()

    class Spy:
        def __init__(self):
            self.calls = []

        def loss(self, out, target):
            self.calls.append("label")
            return F.cross_entropy(out, target)

        def distill_loss(self, out, teacher, target):
            assert not teacher.requires_grad
            self.calls.append("distill")
            return soft_cross_entropy(out, F.softmax(teacher, dim=-1))

    for widths, expected in (
        ([1.0, 0.35, 0.6], ["label", "distill", "distill"]),
        ([0.9, 0.35, 0.6], ["label", "label", "label"]),  # no largest width: no teacher pass
        ([0.35, 1.0], ["label", "label"]),  # the largest width not first: not the teacher
    ):
        spy = Spy()
        usnet.set_width(model, 0.5)
        parts = sandwich_step(model, x, y, widths, spy, inplace_distillation=True)
        assert spy.calls == expected and len(parts) == len(widths)
        assert usnet.get_width(model) == 0.5  # restored
    spy = Spy()
    sandwich_step(model, x, y, [1.0, 0.35], spy, inplace_distillation=False)
    assert spy.calls == ["label", "label"]


def test_gradients_of_all_widths_accumulate_into_one_step():
    model, (x, y) = _model(), _batch()
    widths = [1.0, 0.35, 0.7]
    sandwich_step(model, x, y, widths, ClassificationLoss(), inplace_distillation=False)
    got = {n: p.grad.clone() for n, p in model.named_parameters()}
    expected = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for w in widths:
        model.zero_grad()
        with usnet.width(model, w):
            F.cross_entropy(model(x), y).backward()
        for n, p in model.named_parameters():
            expected[n] += p.grad
    for n in got:
        torch.testing.assert_close(got[n], expected[n], rtol=1e-4, atol=1e-6)
    # the narrowest width touches only the weights' leading slice
    stem = model.features[0][0].weight
    model.zero_grad()
    with usnet.width(model, 0.35):
        F.cross_entropy(model(x), y).backward()
    active = usnet.nn.width_space(model).channels(0.35)["stem"]
    assert stem.grad[active:].abs().sum() == 0 and stem.grad[:active].abs().sum() > 0


def test_smallest_weight_scales_only_the_narrowest_widths_gradient():
    """``train.smallest_weight``: the step's gradient is the sum with the narrowest width's
    loss weighted; the losses it returns stay unweighted; a one-width step is never scaled."""
    x, y = _batch()
    widths = [1.0, 0.35, 0.7]
    grads = {}
    for weight in (1.0, 3.0):
        model = _model()
        parts = sandwich_step(
            model, x, y, widths, ClassificationLoss(), False, smallest_weight=weight
        )
        grads[weight] = {n: p.grad.clone() for n, p in model.named_parameters()}
    model = _model()
    with usnet.width(model, 0.35):
        F.cross_entropy(model(x), y).backward()
    narrow = {n: p.grad.clone() for n, p in model.named_parameters()}
    for n in narrow:
        torch.testing.assert_close(grads[3.0][n], grads[1.0][n] + 2 * narrow[n], rtol=1e-4, atol=1e-6)
    with usnet.width(model, 0.35), torch.no_grad():
        assert float(parts[1]["loss"]) == pytest.approx(float(F.cross_entropy(model(x), y)))
    alone = {}
    for weight in (1.0, 3.0):
        model = _model()
        sandwich_step(model, x, y, [0.35], ClassificationLoss(), False, smallest_weight=weight)
        alone[weight] = [p.grad.clone() for p in model.parameters()]
    for a, b in zip(alone[1.0], alone[3.0], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_weight_decay_spares_bn_biases_and_depthwise_convs():
    model = _model()
    decay, no_decay = param_groups(model, 1e-4, no_weight_decay_depthwise=True)
    ids = {id(p) for p in decay["params"]}
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            assert (id(m.weight) in ids) == (m.groups == 1)
        if isinstance(m, usnet.nn.USBatchNorm2d):
            assert id(m.weight) not in ids
    assert id(model.classifier.weight) in ids and id(model.classifier.bias) not in ids
    assert no_decay["weight_decay"] == 0.0


def test_learning_rate_schedules():
    lin = ScheduleConfig(name="linear")
    assert lr_factor(lin, 0, 10, 2) == 1.0 and lr_factor(lin, 10, 10, 2) == 0.5
    assert lr_factor(lin, 20, 10, 2) == 0.0
    warm = ScheduleConfig(name="cosine", warmup_epochs=1)
    assert lr_factor(warm, 0, 10, 3) == pytest.approx(0.1)
    assert lr_factor(warm, 10, 10, 3) == pytest.approx(1.0)
    assert lr_factor(warm, 20, 10, 3) == pytest.approx(0.5)
    multi = ScheduleConfig(name="multistep", milestones=[1.0, 2.0], gamma=0.1)
    assert [lr_factor(multi, s, 10, 3) for s in (9, 10, 25)] == pytest.approx([1, 0.1, 0.01])
    exp = ScheduleConfig(name="exponential", gamma=0.98)
    assert lr_factor(exp, 25, 10, 5) == pytest.approx(0.98**2)
    # a floor (SR's cosine decay from lr to min_lr): lr_min + (lr - lr_min) (1 + cos) / 2
    floor = ScheduleConfig(name="cosine", min_lr=1e-5)
    for step in (0, 7, 20):
        expected = 1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * step / 20))
        assert 1e-3 * lr_factor(floor, step, 10, 2, lr=1e-3) == pytest.approx(expected)
