"""Opening image files so that no damaged or hostile file becomes silently wrong pixels.

Pillow decodes a PNG whose compressed data ends before its last row without a word, the
missing rows black (its zlib decoder stops at the end of the stream), and no library at hand
reports it (torchvision's libpng decoder crashes on such a file). So :func:`check_png_rows`
counts the bytes the rows decompress to against what the header declares. Pillow refuses a
decompression bomb with its own exception type, and ``Image.convert("RGB")`` clips 16-bit
greyscale to white; :func:`open_image` and :func:`rgb_pixels` turn both into what a data set
needs.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors

from ..errors import UsageError

#: Modes read as 16-bit greyscale (0..65535): Pillow's modes for 16-bit PNG and TIFF files.
SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # PNG colour type -> samples per pixel
#: Adam7 passes: (x start, y start, x step, y step).
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
          (0, 1, 1, 2))  # fmt: skip


def open_image(path: str | Path) -> Image.Image:
    """The decoded image at ``path``; ``UsageError`` naming the file when it is a decompression
    bomb, truncated, corrupt, or a PNG with fewer rows than its header declares."""
    try:
        with Image.open(path) as img:
            img.load()  # the pixels stay when the file closes
        if img.format == "PNG":
            check_png_rows(path)
        return img
    except Image.DecompressionBombError as e:
        raise UsageError(f"{path}: refused as a decompression bomb ({e})") from None
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError, EOFError, struct.error, zlib.error) as e:
        raise UsageError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from None


def check_png_rows(path: str | Path) -> None:
    """``UsageError`` unless the PNG at ``path`` holds every row its header declares."""
    data = Path(path).read_bytes()
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    bits = depth * _CHANNELS.get(colour, 1)

    def row_bytes(columns: int) -> int:
        return 1 + (columns * bits + 7) // 8  # a filter byte, then the packed samples

    if interlace:
        passes = [((width - x0 + dx - 1) // dx, (height - y0 + dy - 1) // dy)
                  for x0, y0, dx, dy in _ADAM7]  # fmt: skip
        expected = sum(rows * row_bytes(cols) for cols, rows in passes if cols and rows)
    else:
        expected = height * row_bytes(width)
    inflate, got, pos = zlib.decompressobj(), 0, 8
    while pos + 8 <= len(data) and got < expected:
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"IDAT":
            got += len(inflate.decompress(data[pos + 8 : pos + 8 + length], expected - got))
            while inflate.unconsumed_tail and got < expected:
                got += len(inflate.decompress(inflate.unconsumed_tail, expected - got))
        pos += 12 + length
    if got < expected:
        raise UsageError(
            f"{path}: truncated PNG: its image data ends before the last of the {height} rows "
            "its header declares"
        )


def rgb_pixels(img: Image.Image) -> Image.Image | torch.Tensor:
    """``img`` as RGB for a torchvision pipeline: 16-bit greyscale as a float image in [0, 1]
    (its precision kept; ``convert("RGB")`` would clip every value above 255 to white),
    anything else converted by Pillow."""
    if img.mode in SIXTEEN_BIT:
        grey = np.asarray(img).astype(np.float32).clip(0, 65535) / 65535
        return tv_tensors.Image(torch.from_numpy(grey).unsqueeze(0).expand(3, -1, -1).contiguous())
    return img.convert("RGB")
