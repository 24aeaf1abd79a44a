"""The ``usnet`` commands against hostile input: special files, absurd sizes and counts, full
disks and misleading words each end in one clear line (the second hostile sweep)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from cli_checks import fails, succeeds
from fixtures import write_fashion_mnist

import usnet
from usnet import checkpoint
from usnet.spectrum import load_spectrum, save_spectrum


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_fashion_mnist(tmp_path_factory.mktemp("fmnist"), n_train=24, n_test=8)


@pytest.fixture
def ckpt(tmp_path, data) -> Path:
    torch.manual_seed(0)
    config = {"data": {"name": "fashion_mnist", "root": str(data)}}
    model = usnet.create_model("us_mobilenet_v1_small")
    usnet.calibrate(model, [torch.randn(8, 1, 28, 28)], [1.0])
    return checkpoint.save(model, tmp_path / "ckpt", meta={"config": config})


def test_special_files_are_never_written_over(capsys, ckpt, tmp_path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    fails(capsys, ["export", str(ckpt), "--width", "1", "--out", "/dev/null"],
          "/dev/null: exists and is not a regular file")  # fmt: skip
    fails(capsys, ["profile", "us_mlp", "--csv", str(fifo)], "fifo: exists and is not a regular")
    assert Path("/dev/null").is_char_device() and fifo.is_fifo()


def test_absurd_sizes_and_counts_are_refused_before_any_work(capsys, ckpt) -> None:
    fails(capsys, ["spectrum", str(ckpt), "--batch-size", "100000000", "--no-metric"],
          "--batch-size 100000000: one batch of inputs alone takes")  # fmt: skip
    fails(capsys, ["spectrum", str(ckpt), "--threads", "100000", "--no-metric"],
          "--threads must be at most 1024, got 100000")  # fmt: skip
    doc = json.loads((ckpt / "usnet.json").read_text())
    doc["arch_kwargs"]["input_size"] = -1
    (ckpt / "usnet.json").write_text(json.dumps(doc))
    fails(capsys, ["export", str(ckpt), "--width", "1"], "input_size", "must be positive sizes")


def test_profile_refuses_an_input_size_whose_conversion_would_not_fit(capsys) -> None:
    """The conversion's example forward keeps every activation: at 2500 px, gigabytes."""
    line = fails(capsys, ["profile", "torchvision:resnet18", "--set", "input_size=2500"],
                 "input_size [3, 2500, 2500]", "GiB")  # fmt: skip
    assert "--input-size" in line
    out = succeeds(capsys, ["profile", "torchvision:resnet18", "--set", "input_size=32",
                            "--widths", "1.0", "--input-size", "2500"])  # fmt: skip
    assert "input 3x2500x2500" in out


def test_a_full_disk_is_one_line_naming_the_file(capsys, ckpt, monkeypatch) -> None:
    def full(self, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    fails(capsys, ["export", str(ckpt), "--width", "1", "--out", str(ckpt.parent / "m.pt2")],
          "No space left on device", "m.pt2")  # fmt: skip
    model = checkpoint.load(ckpt)
    with pytest.raises(OSError, match="No space left on device"):
        checkpoint.save(model, ckpt)
    monkeypatch.undo()
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["ckpt"]  # no temporary files
    checkpoint.load(ckpt)


def test_words_that_misled_now_say_what_is_wrong(capsys, ckpt, tmp_path) -> None:
    fails(capsys, ["export", str(ckpt), "--width", "a=0.5,b"], "'b' is not GROUP=WIDTH")
    fails(capsys, ["select", str(ckpt), "--max-macs", "1e400"], "too large to be a number")
    line = fails(capsys, ["select", str(ckpt), "--min-top1", "-1"], "fraction in [0, 1]")
    assert "did you mean" not in line
    out = succeeds(capsys, ["calibrate", str(ckpt), "--widths", "0.5", "--num-samples", "1000000"])
    assert "from 24 (all the training set holds; 1000000 asked) samples" in out


def test_select_says_an_empty_saved_spectrum_has_no_widths(capsys, ckpt) -> None:
    assert succeeds(capsys, ["spectrum", str(ckpt), "--widths", "0.5,1.0", "--no-metric",
                             "--no-latency", "--quiet"])  # fmt: skip
    spec = load_spectrum(ckpt)
    spec.rows = []
    save_spectrum(spec, ckpt)
    out = succeeds(capsys, ["select", str(ckpt), "--max-macs", "1G", "--no-metric"])
    assert "the saved spectrum has no widths" in out and "selected width 1" in out


def test_a_full_disk_leaves_the_previous_spectrum_files_whole(capsys, ckpt, monkeypatch) -> None:
    argv = ["spectrum", str(ckpt), "--widths", "0.5,1.0", "--no-latency", "--quiet"]
    succeeds(capsys, argv)
    before = {p.name: p.read_bytes() for p in ckpt.iterdir() if p.name.startswith("spectrum")}
    assert before["spectrum.png"].startswith(b"\x89PNG")
    real = Path.write_bytes

    def full_for_png(self, data):
        if self.name.startswith(".spectrum.png."):
            raise OSError(28, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", full_for_png)
    fails(capsys, argv, "No space left on device", "spectrum.png")
    monkeypatch.undo()
    assert (ckpt / "spectrum.png").read_bytes() == before["spectrum.png"]  # not a 0-byte file
    assert not [p for p in ckpt.iterdir() if p.name.endswith(".tmp")]
