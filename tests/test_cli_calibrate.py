"""``usnet calibrate``: every bad input ends in one line naming it, before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cli_checks import fails, succeeds
from fixtures import write_fashion_mnist

import usnet
from usnet import checkpoint


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_fashion_mnist(tmp_path_factory.mktemp("fmnist"), n_train=24, n_test=8)


@pytest.fixture
def ckpt(tmp_path, data) -> Path:
    torch.manual_seed(0)
    config = {"data": {"name": "fashion_mnist", "root": str(data)}}
    model = usnet.create_model("us_mobilenet_v1_small")
    return checkpoint.save(model, tmp_path / "ckpt", meta={"config": config})


def _calibrate(ckpt: Path, *more: str) -> list[str]:
    return ["calibrate", str(ckpt), "--widths", "0.5", *more]


def test_calibrate_saves_the_widths(capsys, ckpt) -> None:
    out = succeeds(capsys, _calibrate(ckpt, "--num-samples", "12", "--batch-size", "6"))
    assert "calibrated 1 width(s) (0.5) from 12 samples (exact)" in out
    assert usnet.is_calibrated(checkpoint.load(ckpt), 0.5)


def test_num_samples_zero_is_refused_not_replaced_by_the_default(capsys, ckpt) -> None:
    fails(capsys, _calibrate(ckpt, "--num-samples", "0"), "--num-samples", "must be >= 1, got 0")
    fails(capsys, _calibrate(ckpt, "--num-samples", "-5"), "--num-samples", "got -5")
    fails(capsys, _calibrate(ckpt, "--batch-size", "0"), "--batch-size", "got 0")


@pytest.mark.parametrize(
    ("device", "needle"),
    [
        ("banana", "--device 'banana' is not a torch device"),
        ("meta", "--device 'meta': usnet runs on cpu, cuda, cuda:N or mps"),
        pytest.param(
            "cuda",
            "--device 'cuda': no CUDA device is available here",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="has a GPU"),
        ),
    ],
)
def test_a_device_this_machine_lacks_is_one_line(capsys, ckpt, device, needle) -> None:
    fails(capsys, _calibrate(ckpt, "--device", device), needle)


@pytest.mark.parametrize(
    ("calibrate", "needle"),
    [
        ({"num_samples": 0}, "meta.config: calibrate.num_samples: must be >= 1, got 0"),
        ({"num_samples": "many"}, "calibrate.num_samples: expected an integer, got 'many'"),
        ({"batch_size": 2.5}, "meta.config: calibrate.batch_size: expected an integer, got 2.5"),
        ({"method": "magic"}, "calibrate.method: expected one of 'exact', 'single_pass', got 'magic'"),
        ("fast", "meta.config: calibrate: expected"),
    ],
)
def test_wrong_values_in_the_checkpoint_config_are_named(capsys, ckpt, calibrate, needle) -> None:
    meta = checkpoint.read_meta(ckpt)
    meta["config"]["calibrate"] = calibrate
    checkpoint.update_meta(ckpt, **meta)
    fails(capsys, _calibrate(ckpt), needle)


def test_bad_checkpoints_and_widths(capsys, ckpt, tmp_path) -> None:
    fails(capsys, _calibrate(ckpt, "--widths", "0.1"), "outside the model's width range")
    fails(capsys, _calibrate(ckpt, "--widths", "a,b"), "widths 'a,b' must be")
    fails(capsys, _calibrate(tmp_path / "nowhere"), "no such checkpoint folder")
    (tmp_path / "file").write_text("x")
    fails(capsys, _calibrate(tmp_path / "file"), "not a checkpoint folder")
    checkpoint.update_meta(ckpt, config=None)
    fails(capsys, _calibrate(ckpt), "has no training config (meta key 'config')")
    info = json.loads((ckpt / "usnet.json").read_text())
    info["arch_kwargs"] = {"num_classes": 10**12}
    (ckpt / "usnet.json").write_text(json.dumps(info))
    fails(capsys, _calibrate(ckpt), "usnet.json", "needs a tensor of shape (1000000000000, 256)")


def test_a_model_without_batch_norm_needs_no_calibration(capsys, tmp_path) -> None:
    """Hostile run: calibrating an SR checkpoint said its metadata names no training data set,
    as if calibration were possible and needed; a network without BN has nothing to calibrate."""
    ckpt = checkpoint.save(usnet.create_model("us_mlp", hidden=[8]), tmp_path / "mlp")
    before = (ckpt / "model.safetensors").read_bytes()
    out = succeeds(capsys, ["calibrate", str(ckpt), "--widths", "0.5"])
    assert "no per-width batch norm to calibrate" in out
    assert (ckpt / "model.safetensors").read_bytes() == before
    # an S-Net's switchable BN keeps trained statistics per switch: nothing to calibrate either
    snet = usnet.create_model("us_mobilenet_v1_small", switches=[1.0, 0.5])
    snet_ckpt = checkpoint.save(snet, tmp_path / "snet")
    out = succeeds(capsys, ["calibrate", str(snet_ckpt), "--widths", "0.5"])
    assert "switchable BN" in out
    fails(capsys, ["calibrate", str(ckpt), "--widths", "2"], "outside the model's width range")
