"""usnet.export.save and ``usnet export``: files that load without usnet and match the US model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_stats import fake_calibrate, randomize_affine
from fixtures import write_fashion_mnist

import usnet
from usnet import checkpoint, cli
from usnet.commands.export import parse_width
from usnet.export import FORMATS, SUFFIXES, TOLERANCE, load_file, read_info, save

KW = {"input_size": 16, "blocks": [[1, 8, 1, 1], [6, 16, 2, 2]], "last_channels": 64}


def tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    model = usnet.create_model("us_mobilenet_v2_small", **KW)
    randomize_affine(model)
    return model


def non_uniform(model: torch.nn.Module) -> dict[str, float]:
    names = [g.name for g in usnet.channel_groups(model) if g.slimmable]
    return {n: (0.4 if i % 2 else 0.8) for i, n in enumerate(names)}


# Runs in a fresh interpreter where ``import usnet`` fails: what a deployment without usnet does.
_LOADER = """
import sys, json
sys.modules["usnet"] = None
import numpy as np, torch, onnxruntime
jobs = json.loads(sys.argv[1])
inputs = np.load(sys.argv[2])
out = {}
for key, (fmt, path) in jobs.items():
    if fmt == "pt":
        run = torch.export.load(path).module()
    elif fmt == "torchscript":
        run = torch.jit.load(path)
    else:
        s = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        run = lambda x, s=s: torch.from_numpy(s.run(None, {"input": x.numpy()})[0])
    for n in ("b1", "b3"):
        with torch.no_grad():
            out[f"{key}/{n}"] = run(torch.from_numpy(inputs[n])).numpy()
np.savez(sys.argv[3], **out)
assert "usnet" not in [m.split(".")[0] for m in sys.modules if sys.modules[m] is not None]
"""


def test_every_format_loads_without_usnet_and_matches(tmp_path: Path) -> None:
    model = tiny()
    widths = {"uniform": 0.5, "non_uniform": non_uniform(model)}
    fake_calibrate(model, list(widths.values()))
    model.eval()
    jobs = {}
    for fmt in FORMATS:
        for name, w in widths.items():
            path = save(model, w, tmp_path / f"{name}{SUFFIXES[fmt]}", fmt)
            assert path.is_file()
            info = read_info(path)
            assert info["arch"] == "us_mobilenet_v2_small" and info["input_size"] == [1, 16, 16]
            assert info["width"] == (w if name == "uniform" else info["width"])
            jobs[f"{fmt}/{name}"] = (fmt, str(path))
    g = torch.Generator().manual_seed(1)
    inputs = {n: torch.randn(b, 1, 16, 16, generator=g) for n, b in (("b1", 1), ("b3", 3))}
    np.savez(tmp_path / "inputs.npz", **{k: v.numpy() for k, v in inputs.items()})
    done = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            _LOADER,
            json.dumps(jobs),
            tmp_path / "inputs.npz",
            tmp_path / "outputs.npz",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    outputs = np.load(tmp_path / "outputs.npz")
    for key, (fmt, _) in jobs.items():
        w = widths[key.split("/")[1]]
        for n, x in inputs.items():
            with torch.no_grad(), usnet.width(model, w):
                expected = model(x)
            got = torch.from_numpy(outputs[f"{key}/{n}"])
            assert got.shape == expected.shape  # batch 1 and 3: the batch axis is dynamic
            assert expected.abs().max() > 0.1
            assert (got - expected).abs().max().item() <= TOLERANCE[fmt], (key, n)
    # the two widths are different networks, so a file that ignored the width would fail above
    assert not np.allclose(outputs["pt/uniform/b1"], outputs["pt/non_uniform/b1"])
    assert usnet.get_width(model) == 1.0 and not model.training


def test_save_errors(tmp_path: Path) -> None:
    model = tiny().eval()
    with pytest.raises(ValueError, match="format 'tflite' is unknown"):
        save(model, 1.0, tmp_path / "m", "tflite")
    with pytest.raises(usnet.nn.UncalibratedWidthError, match="usnet.calibrate"):
        save(model, 0.5, tmp_path / "m.pt2")
    with pytest.raises(ValueError, match="outside the model's width range"):
        save(model, 0.1, tmp_path / "m.pt2")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_save_calibrates_with_attached_data(tmp_path: Path) -> None:
    model = tiny().eval()
    usnet.attach_calibration_data(model, [torch.randn(8, 1, 16, 16)], num_samples=8)
    path = save(model, 0.75, tmp_path / "m.pt", "torchscript")
    assert usnet.is_calibrated(model, 0.75)
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad(), usnet.width(model, 0.75):
        assert torch.allclose(load_file(path)(x), model(x), atol=1e-5)


def test_parse_width(tmp_path: Path) -> None:
    assert parse_width("0.5") == 0.5
    assert parse_width("stem=0.5,*=0.75") == {"stem": 0.5, "*": 0.75}
    assert parse_width('{"*": 0.6}') == {"*": 0.6}
    (tmp_path / "w.json").write_text('{"stem": 0.5, "*": 1}')
    assert parse_width(f"@{tmp_path / 'w.json'}") == {"stem": 0.5, "*": 1.0}
    assert parse_width(None, tmp_path / "w.json") == {"stem": 0.5, "*": 1.0}
    with pytest.raises(ValueError, match="one of them"):
        parse_width(None)
    with pytest.raises(ValueError, match="group 'stem'"):
        parse_width("stem=wide")
    with pytest.raises(FileNotFoundError, match="no such width JSON"):
        parse_width("@" + str(tmp_path / "none.json"))


def test_export_command_calibrates_from_the_checkpoint_data(tmp_path: Path, capsys) -> None:
    data = write_fashion_mnist(tmp_path / "fmnist", n_train=48, n_test=16)
    kwargs = {k: v for k, v in KW.items() if k != "input_size"}
    config = {  # the parts of a training config that export reads
        "model": {"name": "us_mobilenet_v2_small", "kwargs": kwargs},
        "data": {"name": "fashion_mnist", "root": str(data)},
        "calibrate": {"num_samples": 48, "batch_size": 24},
    }
    torch.manual_seed(0)
    model = usnet.create_model("us_mobilenet_v2_small", **kwargs)
    ckpt = checkpoint.save(model, tmp_path / "ckpt", meta={"config": config})
    (tmp_path / "w.json").write_text(json.dumps({"stem": 0.5, "*": 0.75}))

    rc = cli.main(
        [
            "export",
            str(ckpt),
            "--width",
            "0.5",
            "--format",
            "onnx",
            "--no-calibrate",
            "--out",
            str(tmp_path / "a.onnx"),
        ]
    )
    assert rc == 2 and "--no-calibrate" in capsys.readouterr().err

    out = tmp_path / "a.onnx"
    rc = cli.main(
        [
            "export",
            str(ckpt),
            "--width-json",
            str(tmp_path / "w.json"),
            "--format",
            "onnx",
            "--out",
            str(out),
            "--save-stats",
        ]
    )
    text = capsys.readouterr().out
    assert rc == 0 and "calibrated width stem=0.5" in text and "onnxruntime" in text
    reloaded = checkpoint.load(ckpt)
    assert usnet.is_calibrated(reloaded, {"stem": 0.5, "*": 0.75})  # --save-stats kept them
    import onnxruntime

    x = torch.randn(3, 1, 28, 28)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    with torch.no_grad(), usnet.width(reloaded, {"stem": 0.5, "*": 0.75}):
        expected = reloaded(x)
    got = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
    assert (got - expected).abs().max().item() <= 1e-4

    rc = cli.main(["export", str(ckpt), "--width", "nope=0.5"])
    assert rc == 2 and "unknown channel group(s) ['nope']" in capsys.readouterr().err


def test_an_absurd_input_size_is_refused_before_attached_calibration_runs_a_forward(
    tmp_path, monkeypatch
):
    """Review: with calibration data attached, calibrating ran a forward at the absurd size
    before the memory check; the check now comes first and needs no calibration."""
    from usnet.calibration import attach_calibration_data
    from usnet.export import files

    model = tiny()
    attach_calibration_data(model, [torch.randn(4, 1, 16, 16)], num_samples=4)

    def never(*args, **kwargs):
        raise AssertionError("calibrated (a forward at the absurd size) before the check")

    monkeypatch.setattr(files, "_calibrate_attached", never)
    with pytest.raises(ValueError, match=r"input size 1x100000x100000: .* GiB"):
        save(model, 0.5, tmp_path / "m.pt2", "pt", input_size=100000)
    assert model.training  # the check's training mode did not stick
