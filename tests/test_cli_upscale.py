"""``usnet upscale``: every image mode read right, bad and oversized images refused in one line."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_checks import fails, succeeds
from PIL import Image

import usnet
from usnet import checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """An SR model that is exactly bicubic upscaling (zero tail over the bicubic skip)."""
    torch.manual_seed(0)
    model = usnet.create_model("us_edsr", n_resblocks=1, n_feats=8, upsample_skip=True)
    return checkpoint.save(model, tmp_path_factory.mktemp("sr") / "ckpt")


RGB = np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8)
GREY = RGB[..., 0]


def _grey(x: np.ndarray) -> np.ndarray:
    return np.repeat(x[None].astype(np.float32), 3, axis=0)


@pytest.mark.parametrize(
    ("name", "image", "expected", "alpha"),
    [
        ("l.png", Image.fromarray(GREY), _grey(GREY) / 255, None),
        ("i16.png", Image.fromarray(GREY.astype(np.uint16) * 257), _grey(GREY) / 255, None),
        ("i16odd.png", Image.fromarray(np.full((6, 5), 1000, np.uint16)),
         np.full((3, 6, 5), 1000 / 65535), None),
        ("1.png", Image.fromarray(GREY > 127), _grey((GREY > 127) * 255.0) / 255, None),
        ("p.png", Image.fromarray(RGB).quantize(256), None, None),
        ("rgba.png", Image.fromarray(np.dstack([RGB, GREY])), RGB.transpose(2, 0, 1) / 255, GREY),
        ("la.png", Image.merge("LA", [Image.fromarray(GREY)] * 2), _grey(GREY) / 255, GREY),
        ("cmyk.tif", Image.fromarray(RGB).convert("CMYK"), RGB.transpose(2, 0, 1) / 255, None),
    ],
)
def test_every_mode_is_read_as_rgb_in_0_1(tmp_path, name, image, expected, alpha) -> None:
    path = tmp_path / name
    image.save(path)
    from usnet.data.sr import read_image

    if name == "p.png":  # the palette's colours
        expected = np.asarray(image.convert("RGB")).transpose(2, 0, 1) / 255
    x, a = read_image(path)
    assert x.dtype == torch.float32 and x.shape == (3, 6, 5)
    np.testing.assert_allclose(x.numpy(), expected, atol=1e-6)
    assert (a is None) == (alpha is None)
    if alpha is not None:
        assert np.array_equal(np.asarray(a), alpha)


def test_a_16_bit_greyscale_image_is_scaled_not_clipped_to_white(capsys, ckpt, tmp_path) -> None:
    src, out = tmp_path / "in16.png", tmp_path / "out.png"
    Image.fromarray(np.full((6, 5), 0x8080, np.uint16)).save(src)  # mid grey, 16 bits
    assert Image.open(src).mode == "I;16"
    succeeds(capsys, ["upscale", str(ckpt), str(src), str(out)])
    result = np.asarray(Image.open(out))
    assert result.shape == (12, 10, 3) and (result == 128).all()  # not 255


def test_alpha_is_kept_in_png_and_dropped_with_a_note_in_jpeg(capsys, ckpt, tmp_path) -> None:
    src = tmp_path / "in.png"
    Image.fromarray(np.dstack([RGB, np.full((6, 5), 200, np.uint8)])).save(src)
    succeeds(capsys, ["upscale", str(ckpt), str(src), str(tmp_path / "out.png")])
    out = Image.open(tmp_path / "out.png")
    assert out.mode == "RGBA" and out.size == (10, 12)
    assert (np.asarray(out)[..., 3] == 200).all()
    text = succeeds(capsys, ["upscale", str(ckpt), str(src), str(tmp_path / "out.jpg")])
    assert "alpha dropped" in text and Image.open(tmp_path / "out.jpg").mode == "RGB"


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width x height`` greyscale pixels and holds almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def test_oversized_images_are_refused_before_decoding(capsys, ckpt, tmp_path) -> None:
    big, out = tmp_path / "big.png", tmp_path / "out.png"
    big.write_bytes(_png_header(6000, 6000))
    fails(capsys, ["upscale", str(ckpt), str(big), str(out)],
          "6000x6000 = 36000000 pixels, more than the limit of 4194304", "--max-pixels")
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header(20000, 20000))  # beyond Pillow's own bomb limit too
    fails(capsys, ["upscale", str(ckpt), str(bomb), str(out)], "20000x20000", "--max-pixels")
    # a raised limit lets it through to decoding, where this file's missing data shows
    fails(capsys, ["upscale", str(ckpt), str(big), str(out), "--max-pixels", "40000000"],
          "is truncated or corrupt")
    assert not out.exists()


def test_non_image_empty_and_truncated_inputs(capsys, ckpt, tmp_path) -> None:
    out = tmp_path / "out.png"
    cases = {"text.png": b"hello, not an image", "empty.png": b""}
    good = tmp_path / "good.png"
    Image.fromarray(RGB).save(good)
    cases["cut.png"] = good.read_bytes()[: len(good.read_bytes()) // 2]
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    argv = ["upscale", str(ckpt)]
    fails(capsys, [*argv, str(tmp_path / "text.png"), str(out)], "not an image file")
    fails(capsys, [*argv, str(tmp_path / "empty.png"), str(out)], "not an image file")
    fails(capsys, [*argv, str(tmp_path / "cut.png"), str(out)], "cut.png' is truncated")
    fails(capsys, [*argv, str(tmp_path / "none.png"), str(out)], "none.png' does not exist")
    fails(capsys, [*argv, str(tmp_path), str(out)], "is not a file")
    Image.fromarray(GREY.astype(np.float32)).save(tmp_path / "float.tif")
    fails(capsys, [*argv, str(tmp_path / "float.tif"), str(out)], "mode F", "8- or 16-bit")


def test_bad_outputs_devices_and_widths(capsys, ckpt, tmp_path) -> None:
    src = tmp_path / "in.png"
    Image.fromarray(RGB).save(src)
    argv = ["upscale", str(ckpt), str(src)]
    fails(capsys, [*argv, str(tmp_path / "out.xyz")], "unknown image suffix '.xyz'")
    fails(capsys, [*argv, str(src)], "is the input image")
    (tmp_path / "file").write_text("x")
    fails(capsys, [*argv, str(tmp_path / "file" / "out.png")], "file' is a file, not a folder")
    fails(capsys, [*argv, str(tmp_path / "o.png"), "--device", "banana"], "--device 'banana'")
    if not torch.cuda.is_available():
        fails(capsys, [*argv, str(tmp_path / "o.png"), "--device", "cuda"], "no CUDA device")
    fails(capsys, [*argv, str(tmp_path / "o.png"), "--width", "0.1"], "outside")
    fails(capsys, [*argv, str(tmp_path / "o.png"), "--max-pixels", "0"], "--max-pixels")
    assert Image.open(src).size == (5, 6)  # the input is untouched
