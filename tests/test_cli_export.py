"""``usnet export``: bad paths, values and checkpoints end in one line; crash states recover."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest
import torch
from cli_checks import fails, succeeds

import usnet
from usnet import checkpoint


@pytest.fixture
def ckpt(tmp_path) -> Path:
    torch.manual_seed(0)  # an MLP: no batch norm, so every width exports without calibration
    return checkpoint.save(usnet.create_model("us_mlp", hidden=[16]), tmp_path / "ckpt")


def _export(ckpt: Path, *more: str) -> list[str]:
    return ["export", str(ckpt), "--width", "0.5", "--format", "torchscript", *more]


def test_an_output_path_under_a_file_is_one_line(capsys, ckpt, tmp_path) -> None:
    (tmp_path / "some").mkdir()
    (tmp_path / "some" / "file").write_text("not a folder")
    out = tmp_path / "some" / "file" / "x.onnx"
    fails(capsys, _export(ckpt, "--out", str(out)), str(out), "some/file' is a file, not a folder")
    deeper = tmp_path / "some" / "file" / "sub" / "x.pt"
    fails(capsys, _export(ckpt, "--out", str(deeper)), "some/file' is a file, not a folder")
    fails(capsys, _export(ckpt, "--out", str(tmp_path)), "is a folder; give the file to write")
    assert (tmp_path / "some" / "file").read_text() == "not a folder"


def test_bad_checkpoint_paths_and_values(capsys, ckpt, tmp_path) -> None:
    (tmp_path / "file").write_text("x")
    fails(capsys, _export(tmp_path / "file"), "not a checkpoint folder")
    fails(capsys, _export(tmp_path / "nowhere"), "no such checkpoint folder")
    fails(capsys, _export(ckpt, "--input-size", "0"), "--input-size: must be >= 1, got 0")
    fails(capsys, _export(ckpt, "--num-samples", "0"), "--num-samples: must be >= 1, got 0")
    fails(capsys, ["export", str(ckpt), "--width", "wide"], "--width: width 'wide' must be")


def test_an_absurd_num_classes_is_refused_before_allocating(capsys, ckpt) -> None:
    info = json.loads((ckpt / "usnet.json").read_text())
    info["arch_kwargs"]["num_classes"] = 10**12
    (ckpt / "usnet.json").write_text(json.dumps(info))
    fails(capsys, _export(ckpt), "usnet.json", "'num_classes': 1000000000000", "needs a tensor")
    info["arch_kwargs"]["num_classes"] = "ten"
    (ckpt / "usnet.json").write_text(json.dumps(info))
    fails(capsys, _export(ckpt), "usnet.json", "do not build model 'us_mlp'")


def test_export_after_a_save_cut_off_between_its_renames_does_not_strand_the_model(
    capsys, ckpt
) -> None:
    # the disk a killed save leaves: the checkpoint aside, a half-built copy
    os.replace(ckpt, ckpt.with_name(".ckpt.old"))
    (ckpt.with_name(".ckpt.x7_k2abc.tmp")).mkdir()
    out = succeeds(capsys, _export(ckpt))  # default output: into the checkpoint folder
    assert "to " + str(ckpt / "export_w0.5.pt") in out
    model = checkpoint.load(ckpt)
    assert model.arch == "us_mlp"
    assert sorted(p.name for p in ckpt.iterdir()) == [
        "export_w0.5.pt",
        "model.safetensors",
        "usnet.json",
    ]
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["ckpt"]


@pytest.mark.parametrize("name, format", [("m.onnx", "onnx"), ("m.pt", "torchscript")])
def test_the_format_follows_the_out_suffix_when_not_given(capsys, ckpt, tmp_path, name, format):
    """Hostile run: ``--out m.onnx`` without ``--format`` wrote an ExportedProgram named .onnx."""
    out = tmp_path / name
    printed = succeeds(capsys, ["export", str(ckpt), "--width", "0.5", "--out", str(out)])
    assert f"as {format} to {out}" in printed
    assert usnet.export.read_info(out, format)["width"] == 0.5
    x = torch.randn(3, *usnet.load(ckpt).input_size)
    assert usnet.export.load_file(out)(x).shape[0] == 3


def test_an_absurd_input_size_is_refused_before_it_allocates(capsys, ckpt, tmp_path) -> None:
    """Hostile run: ``--input-size 100000`` (or that ``input_size`` in usnet.json) ended in an
    allocation traceback."""
    model = checkpoint.load(ckpt)
    net = usnet.create_model("us_mobilenet_v1_small")
    usnet.calibrate(net, [torch.randn(4, 1, 28, 28)], widths=[0.5])
    conv = checkpoint.save(net, tmp_path / "conv")
    big = "--input-size", "100000"
    fails(capsys, _export(conv, *big, "--no-calibrate"), "input size 1x100000x100000", "GiB")
    info = json.loads((conv / "usnet.json").read_text())
    info["arch_kwargs"]["input_size"] = 10**6
    (conv / "usnet.json").write_text(json.dumps(info))
    fails(capsys, _export(conv, "--no-calibrate"), "input size 1x1000000x1000000", "--input-size")
    assert not list(conv.glob("export_*")) and model.arch == "us_mlp"


def test_torchscript_export_prints_no_torch_jit_deprecation_warnings(capsys, ckpt) -> None:
    """Hostile run: every TorchScript export printed torch.jit.load's FutureWarning (torch 2.14)
    on stderr while checking the file it had just written."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        succeeds(capsys, _export(ckpt))
    assert [str(w.message) for w in caught if "jit" in str(w.message)] == []


def test_the_next_write_removes_temporary_files_a_killed_write_left_in_the_folder(
    capsys, ckpt
) -> None:
    """Hostile run: a write killed before its rename left ``.spectrum.json.k2j3ab9x.tmp`` (and a
    half-written ``.model.safetensors.*.tmp``) in the checkpoint folder for good."""
    stale = [ckpt / ".spectrum.json.k2j3ab9x.tmp", ckpt / ".model.safetensors.q0_zz1ab.tmp"]
    for f in stale:
        f.write_bytes(b"half")
    (ckpt / "notes.tmp").write_text("mine")  # not a name atomic_write makes: kept
    succeeds(capsys, _export(ckpt))  # writes into the checkpoint folder
    assert sorted(p.name for p in ckpt.iterdir()) == [
        "export_w0.5.pt",
        "model.safetensors",
        "notes.tmp",
        "usnet.json",
    ]
