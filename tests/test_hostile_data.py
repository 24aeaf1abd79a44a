"""Data, conversion and calibration against hostile input: damaged and oversized images, 16-bit
greyscale, forwards that change their input, widths sharing a network (the second hostile
sweep)."""

from __future__ import annotations

import logging
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import usnet
from usnet import UsageError
from usnet.data.imagefolder import ImageFolder
from usnet.data.images import open_image
from usnet.data.sr import read_image
from usnet.data.transforms import ImageNetEval
from usnet.nn import width_space


def _png(rows: int, height: int, width: int = 8) -> bytes:
    """An RGB PNG whose header says ``height`` rows and whose data holds ``rows``."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + bytes([200] * width * 3) for _ in range(rows))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))  # fmt: skip


def test_a_png_with_fewer_rows_than_its_header_is_refused(tmp_path: Path) -> None:
    (tmp_path / "short.png").write_bytes(_png(rows=8, height=16))
    (tmp_path / "whole.png").write_bytes(_png(rows=16, height=16))
    assert Image.open(tmp_path / "short.png").convert("RGB").size == (8, 16)  # Pillow: silent
    for read in (open_image, read_image):
        with pytest.raises(UsageError, match="short.png: truncated PNG"):
            read(tmp_path / "short.png")
        read(tmp_path / "whole.png")


def _image_folder(tmp_path: Path, image: Image.Image) -> Path:
    for split in ("train", "val"):
        (tmp_path / split / "a").mkdir(parents=True)
        image.save(tmp_path / split / "a" / "x.png")
    return tmp_path


def test_16_bit_grey_is_read_with_its_values_not_clipped_to_white(tmp_path: Path) -> None:
    values = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    root = _image_folder(tmp_path, Image.fromarray(values))
    data = ImageFolder(root, "val", transform=ImageNetEval(32, 32, (0,) * 3, (1,) * 3))
    x, _ = data[0]
    expected = torch.from_numpy(values.astype(np.float32) / 65535)  # the independent reading
    assert torch.allclose(x[0], expected, atol=1e-3) and torch.equal(x[0], x[2])
    assert (x > 0.99).float().mean() < 0.05  # Pillow's convert("RGB") made 99.6 % white


def test_a_decompression_bomb_in_an_image_folder_is_one_line(tmp_path: Path, monkeypatch) -> None:
    root = _image_folder(tmp_path, Image.new("RGB", (64, 64)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4096 pixels: over twice the limit
    data = ImageFolder(root, "train", augment=True, input_size=32)
    with pytest.raises(UsageError, match=r"x\.png: refused as a decompression bomb"):
        data[0]


class _Mutating(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x.mul_(2)  # changes its input in place
        return self.fc(self.bn(self.conv(x)).mean((2, 3)))


def test_convert_refuses_empty_batches_takes_keep_none_and_leaves_the_input_alone() -> None:
    x = torch.randn(2, 3, 8, 8)
    before = x.clone()
    model = usnet.convert(_Mutating(), x, keep=None)  # a forward changing its input converts
    assert torch.equal(x, before)  # and the caller's tensor is left as it was
    assert width_space(model).groups
    with pytest.raises(UsageError, match="at least one example"):
        usnet.convert(_Mutating(), torch.randn(0, 3, 8, 8))


def test_calibrating_a_width_never_changes_another_width_it_was_not_asked_to(caplog) -> None:
    """A converted net whose narrow width selects the full network (8 channels, divisor 8):
    calibrating 0.5 must keep 1.0's pretrained statistics, unless 1.0 is named too."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(8, 4))  # fmt: skip
    net[1].running_mean.normal_()
    net[1].running_var.uniform_(0.5, 2.0)
    x = torch.randn(4, 3, 8, 8)
    expected = net.eval()(x)  # the pretrained network: the oracle at width 1.0
    model = usnet.convert(net, x)
    space = width_space(model)
    assert space.resolve(0.5)[1] == space.resolve(1.0)[1]
    data = [torch.randn(16, 3, 8, 8) * 3]
    with caplog.at_level(logging.WARNING, logger="usnet"):
        usnet.calibrate(model, data, [0.5])
    assert "width 0.5 selects the same network as calibrated width(s) 1" in caplog.text
    assert usnet.is_calibrated(model, 0.5)
    with usnet.width(model.eval(), 1.0), torch.no_grad():
        assert torch.equal(model(x), expected)
    usnet.calibrate(model, data, [0.5, 1.0])  # named: recomputed
    with usnet.width(model, 1.0), torch.no_grad():
        assert not torch.allclose(model(x), expected, atol=1e-3)
