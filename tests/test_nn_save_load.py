"""Models in other dtypes and wrapped models calibrate, save and load (issue 8, defects 1-2)."""

from __future__ import annotations

import copy

import pytest
import torch
from tiny import eval_at, tiny_inputs, tiny_model

import usnet
from usnet.calibration import calibrate, is_calibrated
from usnet.nn import USBatchNorm2d


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
    model, x = tiny_model().to(dtype), tiny_inputs(32).to(dtype)
    calibrate(model, [x], [0.5, 1.0])
    assert _stats_dtypes(model) == {dtype}
    out = eval_at(model, x)
    assert out.dtype == dtype and torch.isfinite(out).all()


def test_float64_statistics_match_float32_ones():
    x = tiny_inputs(32)
    m32, m64 = tiny_model(), tiny_model().double()
    calibrate(m32, [x], [0.5])
    calibrate(m64, [x.double()], [0.5])
    torch.testing.assert_close(
        eval_at(m64, x.double()).float(), eval_at(m32, x), rtol=1e-4, atol=1e-5
    )


def test_dtype_changes_after_calibration_and_loading_into_another_dtype():
    model, x = tiny_model(), tiny_inputs(32)
    calibrate(model, [x], [0.5])
    expected = eval_at(model, x)
    assert eval_at(copy.deepcopy(model).double(), x.double()).dtype == torch.float64
    low = copy.deepcopy(model).to(torch.bfloat16)
    assert eval_at(low, x.to(torch.bfloat16)).dtype == torch.bfloat16
    twin = tiny_model().double()  # a float64 model takes float32 statistics in its own dtype
    twin.load_state_dict(model.state_dict())
    assert _stats_dtypes(twin) == {torch.float64}
    torch.testing.assert_close(eval_at(twin, x.double()).float(), expected, rtol=1e-4, atol=1e-5)


def test_save_and_load_a_float64_model(tmp_path):
    model, x = tiny_model().double(), tiny_inputs(32).double()
    calibrate(model, [x], [0.5])
    expected = eval_at(model, x)
    usnet.save(model, tmp_path / "ckpt")
    loaded = usnet.load(tmp_path / "ckpt")  # rebuilt by the registry: float32
    assert is_calibrated(loaded, 0.5) and _stats_dtypes(loaded) == {torch.float32}
    torch.testing.assert_close(eval_at(loaded, x.float()).double(), expected, rtol=1e-4, atol=1e-5)
    loaded = loaded.double()
    torch.testing.assert_close(eval_at(loaded, x), expected, rtol=1e-6, atol=1e-6)


def test_save_a_compiled_model(tmp_path):
    """``usnet.save(torch.compile(model))`` used to write ``_orig_mod.*`` keys that load rejected."""
    model, x = tiny_model(), tiny_inputs(32)
    calibrate(model, [x], [0.5])
    compiled = torch.compile(model)  # never called: nothing is compiled
    usnet.save(compiled, tmp_path / "ckpt")
    loaded = usnet.load(tmp_path / "ckpt")
    torch.testing.assert_close(eval_at(loaded, x), eval_at(model, x), rtol=0, atol=0)
