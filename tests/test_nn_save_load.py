"""Models in other dtypes and wrapped models calibrate, save and load (issue 8, defects 1-2)."""

from __future__ import annotations

import copy

import pytest
import torch

import usnet
from usnet.calibration import calibrate, is_calibrated
from usnet.nn import USBatchNorm2d


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return usnet.create_model(
        "us_mobilenet_v2_small", input_size=16, blocks=((1, 8, 1, 1), (6, 16, 2, 2)), last_channels=64
    )


def _x(n: int = 32) -> torch.Tensor:
    return torch.randn(n, 1, 16, 16, generator=torch.Generator().manual_seed(1))


def _eval(model: torch.nn.Module, x: torch.Tensor, w: float = 0.5) -> torch.Tensor:
    model.eval()
    with usnet.width(model, w), torch.no_grad():
        return model(x)


def _stats_dtypes(model: torch.nn.Module) -> set[torch.dtype]:
    return {
        b.dtype
        for m in model.modules()
        if isinstance(m, USBatchNorm2d)
        for name, b in m.named_buffers()
        if name.startswith("stats_")
    }


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_a_model_in_another_dtype_calibrates_in_that_dtype(dtype):
    model, x = _model().to(dtype), _x().to(dtype)
    calibrate(model, [x], [0.5, 1.0], progress=False)
    assert _stats_dtypes(model) == {dtype}
    out = _eval(model, x)
    assert out.dtype == dtype and torch.isfinite(out).all()


def test_float64_statistics_match_float32_ones():
    x = _x()
    m32, m64 = _model(), _model().double()
    calibrate(m32, [x], [0.5], progress=False)
    calibrate(m64, [x.double()], [0.5], progress=False)
    torch.testing.assert_close(_eval(m64, x.double()).float(), _eval(m32, x), rtol=1e-4, atol=1e-5)


def test_dtype_changes_after_calibration_and_loading_into_another_dtype():
    model, x = _model(), _x()
    calibrate(model, [x], [0.5], progress=False)
    expected = _eval(model, x)
    assert _eval(copy.deepcopy(model).double(), x.double()).dtype == torch.float64
    low = copy.deepcopy(model).to(torch.bfloat16)
    assert _eval(low, x.to(torch.bfloat16)).dtype == torch.bfloat16
    twin = _model().double()  # a float64 model takes float32 statistics in its own dtype
    twin.load_state_dict(model.state_dict())
    assert _stats_dtypes(twin) == {torch.float64}
    torch.testing.assert_close(_eval(twin, x.double()).float(), expected, rtol=1e-4, atol=1e-5)


def test_save_and_load_a_float64_model(tmp_path):
    model, x = _model().double(), _x().double()
    calibrate(model, [x], [0.5], progress=False)
    expected = _eval(model, x)
    usnet.save(model, tmp_path / "ckpt")
    loaded = usnet.load(tmp_path / "ckpt")  # rebuilt by the registry: float32
    assert is_calibrated(loaded, 0.5) and _stats_dtypes(loaded) == {torch.float32}
    torch.testing.assert_close(_eval(loaded, x.float()).double(), expected, rtol=1e-4, atol=1e-5)
    loaded = loaded.double()
    torch.testing.assert_close(_eval(loaded, x), expected, rtol=1e-6, atol=1e-6)


def test_save_a_compiled_model(tmp_path):
    """``usnet.save(torch.compile(model))`` used to write ``_orig_mod.*`` keys that load rejected."""
    model, x = _model(), _x()
    calibrate(model, [x], [0.5], progress=False)
    compiled = torch.compile(model)  # never called: nothing is compiled
    usnet.save(compiled, tmp_path / "ckpt")
    loaded = usnet.load(tmp_path / "ckpt")
    torch.testing.assert_close(_eval(loaded, x), _eval(model, x), rtol=0, atol=0)
