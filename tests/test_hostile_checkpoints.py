"""Checkpoints against hostile and unlucky input: damaged bytes, code named by a checkpoint,
user folders, symbolic links, ``.`` as the folder (the second hostile sweep)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_checks import fails, succeeds
from fixtures import write_fashion_mnist

import usnet
from usnet import checkpoint
from usnet.checkpoint import CheckpointError


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_fashion_mnist(tmp_path_factory.mktemp("fmnist"), n_train=24, n_test=8)


@pytest.fixture
def ckpt(tmp_path, data) -> Path:
    torch.manual_seed(0)
    config = {"data": {"name": "fashion_mnist", "root": str(data)}}
    model = usnet.create_model("us_mobilenet_v1_small")
    return checkpoint.save(model, tmp_path / "ckpt", meta={"config": config})


def test_flipped_bytes_in_the_weights_are_refused_in_one_line(capsys, ckpt) -> None:
    weights = ckpt / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0x01  # one bit of one weight: still a valid safetensors file
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: damaged"):
        checkpoint.load(ckpt)
    fails(capsys, ["export", str(ckpt), "--width", "1.0"], "damaged", "checksum")
    assert json.loads((ckpt / "usnet.json").read_text())["weights_sha256"]


def test_save_keeps_every_entry_of_the_folder_it_does_not_own(ckpt) -> None:
    (ckpt / "exports").mkdir()
    (ckpt / "exports" / "model.onnx").write_bytes(b"onnx")
    (ckpt / "notes.txt").write_text("mine")
    model = checkpoint.load(ckpt)
    checkpoint.save(model, ckpt, meta={"epoch": 2})
    checkpoint.save_statistics(model, ckpt)
    assert (ckpt / "exports" / "model.onnx").read_bytes() == b"onnx"
    assert (ckpt / "notes.txt").read_text() == "mine"
    assert checkpoint.read_meta(ckpt) == {"epoch": 2}


def test_calibrating_through_a_linked_folder_updates_its_target(capsys, ckpt, tmp_path) -> None:
    link = tmp_path / "linked"
    link.symlink_to(ckpt, target_is_directory=True)
    assert not usnet.is_calibrated(checkpoint.load(ckpt), 0.5)
    succeeds(capsys, ["calibrate", str(link), "--widths", "0.5", "--num-samples", "8"])
    assert link.is_symlink() and os.readlink(link) == str(ckpt)
    assert usnet.is_calibrated(checkpoint.load(ckpt), 0.5)  # the target, not a copy
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "linked"]


def test_calibrate_dot_inside_the_checkpoint_folder(capsys, ckpt, monkeypatch) -> None:
    monkeypatch.chdir(ckpt)
    out = succeeds(capsys, ["calibrate", ".", "--widths", "0.5", "--num-samples", "8"])
    assert "saved into ." in out
    assert usnet.is_calibrated(checkpoint.load(ckpt), 0.5)


_EVIL = "from pathlib import Path\nPath('RAN').write_text('code from the checkpoint ran')\n"


def test_a_checkpoint_never_imports_a_module_the_user_did_not_allow(
    capsys, ckpt, tmp_path, monkeypatch
) -> None:
    """``arch: evil:Net`` with an evil.py in the current folder: nothing runs."""
    doc = json.loads((ckpt / "usnet.json").read_text())
    (ckpt / "usnet.json").write_text(json.dumps({**doc, "arch": "evil_ckpt_module:Net"}))
    (tmp_path / "evil_ckpt_module.py").write_text(_EVIL)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # even where the folder is importable
    fails(capsys, ["calibrate", str(ckpt), "--widths", "0.5"], "evil_ckpt_module", "--trust-code")
    with pytest.raises(CheckpointError, match="trust_code=True"):
        usnet.load(ckpt)
    assert not (tmp_path / "RAN").exists() and "evil_ckpt_module" not in sys.modules
    # `python -m usnet` does not search the current folder, even when the user trusts the file
    env = {**os.environ, "PYTHONPATH": str(Path(usnet.__file__).parents[1])}
    run = subprocess.run(
        [sys.executable, "-m", "usnet", "export", str(ckpt), "--width", "1", "--trust-code"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert "module 'evil_ckpt_module' cannot be imported" in run.stderr
    assert not (tmp_path / "RAN").exists()
