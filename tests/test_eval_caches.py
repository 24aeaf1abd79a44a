"""The eval fast path (cached weight slices and BN statistics) never serves stale tensors."""

from __future__ import annotations

import copy

import torch

import usnet
from usnet.calibration import attach_calibration_data, calibrate, is_calibrated


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return usnet.create_model(
        "us_mobilenet_v2_small", input_size=16, blocks=((1, 8, 1, 1), (6, 16, 2, 2)), last_channels=64
    )


def _x(n: int = 16) -> torch.Tensor:
    return torch.randn(n, 1, 16, 16, generator=torch.Generator().manual_seed(1))


def _eval(model: torch.nn.Module, x: torch.Tensor, w: float = 0.5) -> torch.Tensor:
    model.eval()
    with usnet.width(model, w), torch.no_grad():
        return model(x)


def test_a_deep_copy_does_not_reuse_the_originals_cached_tensors():
    model, x = _model(), _x()
    calibrate(model, [x], [0.5], progress=False)
    _eval(model, x)  # fills the caches
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for p in twin.parameters():
            p.mul_(1.5)
    fresh = copy.deepcopy(twin)
    for m in fresh.modules():
        m.__dict__.pop("_slice_cache", None)
        if isinstance(m, usnet.nn.USBatchNorm2d):
            m._eval_cache = {}
    torch.testing.assert_close(_eval(twin, x), _eval(fresh, x))


def test_dtype_change_after_eval_uses_new_weights():
    model, x = _model(), _x()
    calibrate(model, [x], [0.5], progress=False)
    _eval(model, x)
    out = _eval(model.double(), x.double())
    assert out.dtype == torch.float64


def test_loading_replaces_the_calibrated_set():
    a, b, x = _model(), _model(), _x()
    calibrate(a, [x], [0.75, 1.0], progress=False)
    calibrate(b, [x * 2], [0.35], progress=False)  # 0.35 is another network than 0.75 or 1.0
    b.load_state_dict(a.state_dict())  # strict: b's 0.35 statistics must not be "missing"
    assert is_calibrated(b, 0.75) and is_calibrated(b, 1.0) and not is_calibrated(b, 0.35)
    torch.testing.assert_close(_eval(b, x, 0.75), _eval(a, x, 0.75))


def test_extract_drops_attached_calibration_data():
    model = usnet.create_model("us_mlp", hidden=(16, 16))
    attach_calibration_data(model, [torch.randn(8, 1, 28, 28)], num_samples=8)
    dense = usnet.export.extract(model, 0.5)
    assert not dense._forward_pre_hooks
    assert dense(torch.randn(2, 1, 28, 28)).shape == (2, 10)
