"""Post-statistics BN: the statistics are the true ones, for any width, at any time."""

from __future__ import annotations

import pytest
import torch

import usnet
from usnet.calibration import attach_calibration_data, calibrate, is_calibrated
from usnet.nn import UncalibratedWidthError, USBatchNorm2d


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return usnet.create_model(
        "us_mobilenet_v2_small", input_size=16, blocks=((1, 8, 1, 1), (6, 16, 2, 2)), last_channels=64
    )


def _data(n: int = 240, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 16, 16, generator=g) * 2 + 0.5


def _batches(x: torch.Tensor, bs: int) -> list[torch.Tensor]:
    return list(x.split(bs))


def _stats(model: torch.nn.Module, width: float) -> list[tuple[torch.Tensor, torch.Tensor]]:
    key = usnet.nn.width_space(model).resolve(width)[1]
    return [bn.get_stats(key) for bn in model.modules() if isinstance(bn, USBatchNorm2d)]


def test_eval_at_uncalibrated_width_says_how_to_calibrate():
    model = _model().eval()
    usnet.set_width(model, 0.5)
    with pytest.raises(UncalibratedWidthError, match=r"usnet.calibrate\(model"):
        model(_data(2))


@pytest.mark.parametrize("width", [0.35, 0.61, 1.0])
def test_exact_statistics_are_what_eval_bns_see(width):
    """After calibration, every BN's stored mean/var equal the mean/var of its inputs in eval mode."""
    model, x = _model(), _data()
    calibrate(model, _batches(x, 60), [width], num_samples=len(x))
    model.eval()
    seen: dict[USBatchNorm2d, list[torch.Tensor]] = {}
    hooks = [
        bn.register_forward_pre_hook(lambda m, a: seen.setdefault(m, []).append(a[0]))
        for bn in model.modules()
        if isinstance(bn, USBatchNorm2d)
    ]
    with usnet.width(model, width), torch.no_grad():
        model(x)  # one batch: the hooks see every sample
    for h in hooks:
        h.remove()
    key = usnet.nn.width_space(model).resolve(width)[1]
    assert len(seen) == 10
    for bn, inputs in seen.items():
        act = torch.cat(inputs).transpose(0, 1).flatten(1).double()
        mean, var = bn.get_stats(key)
        assert mean.shape == (act.shape[0],)
        torch.testing.assert_close(mean.double(), act.mean(1), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(var.double(), act.var(1, unbiased=True), rtol=1e-4, atol=1e-5)


def test_exact_statistics_do_not_depend_on_batch_size():
    model, x = _model(), _data()
    calibrate(model, _batches(x, 10), [0.5], num_samples=len(x))
    small = _stats(model, 0.5)
    calibrate(model, _batches(x, 120), [0.5], num_samples=len(x))
    for (m1, v1), (m2, v2) in zip(small, _stats(model, 0.5), strict=True):
        torch.testing.assert_close(v1, v2, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(m1, m2, rtol=1e-5, atol=1e-6)


def test_single_pass_pools_every_bn_input_with_batch_statistics_upstream():
    """The authors' estimator: BNs normalise with batch stats; stored stats pool all inputs."""
    model, x = _model(), _data()
    calibrate(model, _batches(x, 40), [0.75], num_samples=200, method="single_pass")
    seen: dict[USBatchNorm2d, list[torch.Tensor]] = {}
    bns = [bn for bn in model.modules() if isinstance(bn, USBatchNorm2d)]
    hooks = [bn.register_forward_pre_hook(lambda m, a: seen.setdefault(m, []).append(a[0])) for bn in bns]
    model.train()
    with usnet.width(model, 0.75), torch.no_grad():
        for xb in _batches(x[:200], 40):
            model(xb)
    for h in hooks:
        h.remove()
    key = usnet.nn.width_space(model).resolve(0.75)[1]
    for bn in bns:
        act = torch.cat(seen[bn]).transpose(0, 1).flatten(1).double()
        mean, var = bn.get_stats(key)
        torch.testing.assert_close(mean.double(), act.mean(1), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(var.double(), act.var(1), rtol=1e-4, atol=1e-5)


def test_fixed_size_bn_keeps_statistics_per_width():
    """MobileNet v2's last BN has a fixed channel count but different inputs at each width."""
    model, x = _model(), _data()
    calibrate(model, _batches(x, 60), [0.35, 1.0], num_samples=len(x))
    last = [bn for bn in model.modules() if isinstance(bn, USBatchNorm2d)][-1]
    assert last.span.space is None  # fixed channels
    (m1, _), (m2, _) = (last.get_stats(usnet.nn.width_space(model).resolve(w)[1]) for w in (0.35, 1.0))
    assert m1.shape == m2.shape == (64,)
    assert not torch.allclose(m1, m2)


def test_any_width_any_time_and_state_is_restored():
    model, x = _model(), _data()
    model.train()
    usnet.set_width(model, 0.8)
    calibrate(model, _batches(x, 60), [0.42, {"*": 0.5, "stage1": 0.9}])
    assert model.training and usnet.get_width(model) == 0.8
    assert is_calibrated(model, 0.42) and not is_calibrated(model, 0.8)
    model.eval()
    for w in (0.42, {"*": 0.5, "stage1": 0.9}):
        with usnet.width(model, w), torch.no_grad():
            assert torch.isfinite(model(x[:4])).all()


def test_attached_data_calibrates_on_first_use():
    model, x = _model(), _data()
    attach_calibration_data(model, _batches(x, 60), num_samples=120)
    model.eval()
    usnet.set_width(model, 0.66)
    assert not is_calibrated(model, 0.66)
    with torch.no_grad():
        out = model(x[:3])
    assert is_calibrated(model, 0.66) and out.shape == (3, 10)


def test_bad_arguments():
    model = _model()
    with pytest.raises(ValueError, match="calibration method 'fast'"):
        calibrate(model, [_data(4)], [0.5], method="fast")
    with pytest.raises(ValueError, match=r"outside the model's width range \[0.35, 1.0\]"):
        calibrate(model, [_data(4)], [0.2])


def test_recalibration_and_reload_are_seen_by_a_cached_eval_model():
    """The eval fast path caches per-width views; new statistics must still take effect."""
    model, x = _model(), _data()
    calibrate(model, _batches(x, 60), [0.5])
    model.eval()
    with usnet.width(model, 0.5), torch.no_grad():
        before = model(x[:4])
        calibrate(model, _batches(x * 3, 60), [0.5])
        model.eval()
        after = model(x[:4])
        assert not torch.allclose(before, after)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        calibrate(model, _batches(x, 60), [0.5])
        model.eval()
        model.load_state_dict(state)
        torch.testing.assert_close(model(x[:4]), after)


# -- issue 8: bad widths, non-finite data, streaming and bounded memory ---------------------------
def test_widths_given_as_a_string_are_refused():
    """``widths="0.5"`` used to be iterated: '0', '.', '5'."""
    model = _model()
    with pytest.raises(ValueError, match=r"got the string '0.5'.*parse_widths"):
        calibrate(model, [_data(8)], "0.5")
    with pytest.raises(ValueError, match=r"must be a real number .* got True"):
        calibrate(model, [_data(8)], [True])


def test_one_width_is_a_list_of_one():
    model, x = _model(), _data(40)
    calibrate(model, [x], 0.5)
    calibrate(model, [x], {"*": 0.5, "stage1": 0.9})
    assert is_calibrated(model, 0.5) and is_calibrated(model, {"*": 0.5, "stage1": 0.9})
    assert not is_calibrated(model, 1.0)


@pytest.mark.parametrize("method", ["exact", "single_pass"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_inputs_raise_and_keep_the_old_statistics(method, bad):
    model, x = _model(), _data(40)
    calibrate(model, [x], [0.5], method=method)
    before = _stats(model, 0.5)
    poisoned = x.clone()
    poisoned[3, 0, 2, 2] = bad
    with pytest.raises(ValueError, match=r"width 0.5: batch norm 'features.0.1' got non-finite"):
        calibrate(model, [poisoned], [0.5], method=method)
    for (m1, v1), (m2, v2) in zip(before, _stats(model, 0.5), strict=True):
        assert torch.equal(m1, m2) and torch.equal(v1, v2)
    with pytest.raises(ValueError, match="non-finite"):
        calibrate(model, [poisoned], [0.75], method=method)
    assert not is_calibrated(model, 0.75)  # nothing stored for the failed width
    assert all(s is None for s in _stats(model, 0.75))


def _conv_calls(model: torch.nn.Module) -> list[int]:
    calls = [0]
    for m in model.modules():
        if isinstance(m, usnet.nn.USConv2d):
            m.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_exact_runs_each_layer_once_per_batch_and_any_cache_budget_gives_the_same_statistics():
    """Layer-major: about one forward. A budget too small for the activations recomputes
    (bounded memory) and must not change a single bit."""
    model, x = _model(), _data()
    convs = sum(isinstance(m, usnet.nn.USConv2d) for m in model.modules())
    calls = _conv_calls(model)
    calibrate(model, _batches(x, 60), [0.5], num_samples=len(x))
    assert calls[0] == convs * 4
    default = _stats(model, 0.5)
    for budget in (0, 50_000):
        calls[0] = 0
        calibrate(model, _batches(x, 60), [0.5], len(x), cache_bytes=budget)
        assert calls[0] > convs * 4
        for (m1, v1), (m2, v2) in zip(default, _stats(model, 0.5), strict=True):
            assert torch.equal(m1, m2) and torch.equal(v1, v2)
    with pytest.raises(ValueError, match="cache_bytes must be an int >= 0"):
        calibrate(model, [x], [0.5], cache_bytes=-1)


@pytest.mark.parametrize("width", [0.35, 1.0])
def test_exact_statistics_of_channels_last_inputs(width):
    """Channels-last activations take another statistics kernel (chunked float32 sums)."""
    model, x = _model(), _data()
    calibrate(model, _batches(x, 60), [width], num_samples=len(x))
    expected = _stats(model, width)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    calibrate(model, _batches(x_cl, 60), [width], num_samples=len(x))
    for (m1, v1), (m2, v2) in zip(expected, _stats(model, width), strict=True):
        torch.testing.assert_close(m2, m1, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(v2, v1, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("offset", [0.0, 1e3])
@pytest.mark.parametrize("channels_last", [False, True])
def test_batch_moments_are_exact_also_far_from_zero(offset, channels_last):
    """Plane sums of x and x^2 cancel when the mean dwarfs the spread: the kernel takes over."""
    from usnet.calibration.moments import batch_moments

    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 5, 9, 7, generator=g) * 0.5 + offset + torch.arange(5.0).view(1, 5, 1, 1)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    n, mean, m2 = batch_moments(x)
    ref = x.double().transpose(0, 1).flatten(1)
    assert n == 6 * 9 * 7 and mean.dtype == m2.dtype == torch.float64
    torch.testing.assert_close(mean, ref.mean(1), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(m2 / (n - 1), ref.var(1), rtol=1e-5, atol=1e-7)


def test_a_changed_module_tree_is_traced_again():
    """Calibration keeps its traced graphs per network; a replaced module must not be run."""
    import copy

    model, x = _model(), _data()
    calibrate(model, _batches(x, 60), [0.5])
    twin = copy.deepcopy(model)
    assert not usnet.nn.width_space(twin).programs  # a copy traces its own modules
    for m in (model, twin):
        m.features[1].body[2] = torch.nn.Identity()  # an activation replaced
    calibrate(model, _batches(x, 60), [0.5])
    calibrate(twin, _batches(x, 60), [0.5], cache_bytes=0)  # truncated passes
    for (m1, v1), (m2, v2) in zip(_stats(model, 0.5), _stats(twin, 0.5), strict=True):
        torch.testing.assert_close(m1, m2, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(v1, v2, rtol=1e-6, atol=1e-7)


def test_a_model_without_stages_is_calibrated_layer_major_too():
    """The whole forward is one stage: still one pass, the same statistics to the bit."""
    model, x = _model(), _data()
    calibrate(model, _batches(x, 60), [0.5], num_samples=len(x))
    staged = _stats(model, 0.5)
    model.calibration_stages = lambda: None  # as a model converted from any CNN
    convs = sum(isinstance(m, usnet.nn.USConv2d) for m in model.modules())
    calls = _conv_calls(model)
    calibrate(model, _batches(x, 60), [0.5], num_samples=len(x))
    assert calls[0] == convs * 4
    for (m1, v1), (m2, v2) in zip(staged, _stats(model, 0.5), strict=True):
        assert torch.equal(m1, m2) and torch.equal(v1, v2)
