"""Super-resolution data: LR/HR pairs made from high-resolution images by bicubic downscaling.

Sources: a folder of HR images (the DIV2K layout, e.g. ``DIV2K_train_HR/*.png``), or the embedded
default, natural RGB photos that ship inside scikit-image's wheel (no download), split into fixed
train and test images. Each HR image is cropped to a multiple of the scale and downscaled once
with Pillow's bicubic filter (antialiased, like MATLAB's ``imresize``); training samples random
aligned patches of the pair with random flips and 90-degree rotations.
"""

from __future__ import annotations

import contextlib
import struct
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from ..errors import UsageError
from .images import SIXTEEN_BIT, check_png_rows

#: Embedded photos (``skimage.data`` functions, all RGB, in the wheel): fixed train/test split.
EMBEDDED_TRAIN = ("astronaut", "rocket", "motorcycle", "immunohistochemistry", "hubble_deep_field")
EMBEDDED_TEST = ("coffee", "chelsea")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def embedded_images(names: Sequence[str]) -> list[tuple[str, Image.Image]]:
    """Photos from ``skimage.data`` by name (``motorcycle`` is the left view of the stereo pair)."""
    try:
        import skimage.data as data
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the embedded SR images need scikit-image: pip install 'usnet[sr]', or give "
            "data.train_dir / data.test_dir (folders of HR images)"
        ) from None
    images = []
    for name in names:
        if name == "motorcycle":
            array = data.stereo_motorcycle()[0]
        elif name in EMBEDDED_TRAIN + EMBEDDED_TEST:
            array = getattr(data, name)()
        else:
            raise UsageError(
                f"embedded SR image {name!r} is unknown; allowed: "
                f"{list(EMBEDDED_TRAIN + EMBEDDED_TEST)}"
            )
        images.append((name, Image.fromarray(np.ascontiguousarray(array)).convert("RGB")))
    return images


def folder_images(folder: str | Path) -> list[tuple[str, Image.Image]]:
    """Every image file directly in ``folder`` (sorted by name), as RGB."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"HR image folder {str(folder)!r} does not exist")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FileNotFoundError(
            f"HR image folder {str(folder)!r} has no images ({', '.join(IMAGE_SUFFIXES)})"
        )
    out = []
    for p in paths:
        with Image.open(p) as im:
            out.append((p.stem, im.convert("RGB")))
    return out


def to_tensor(image: Image.Image) -> Tensor:
    """An RGB PIL image as a ``(3, H, W)`` uint8 tensor."""
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy()).permute(
        2, 0, 1
    )


def to_image(x: Tensor) -> Image.Image:
    """A ``(3, H, W)`` float tensor in [0, 1] as an 8-bit RGB PIL image (rounded, clamped)."""
    array = x.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array, "RGB")


#: Default largest input of :func:`read_image`, in pixels (2048 x 2048): the activations of an SR
#: network on it take a few GB. Raise it with ``max_pixels`` (``usnet upscale --max-pixels``).
MAX_PIXELS = 2048 * 2048
#: Output formats that keep an input's alpha band.
ALPHA_FORMATS = ("PNG", "WEBP", "TIFF")


def read_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> tuple[Tensor, Image.Image | None]:
    """An image file as a ``(3, H, W)`` float tensor in [0, 1], and its alpha band (or None).

    The size is checked against ``max_pixels`` before any pixel is decoded. Greyscale becomes
    grey RGB; 16-bit greyscale (``I;16``, and ``I`` read as 16-bit) keeps its precision;
    palette images use their colours; CMYK and other colour modes are converted to RGB; the
    alpha of LA/RGBA/PA images (or a palette's transparency) is returned apart. Unreadable,
    empty, truncated or oversized files raise ``ValueError`` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input image {str(path)!r} does not exist or is not a file")
    try:
        with _own_size_check():
            im = Image.open(path)
    except Image.UnidentifiedImageError:
        raise UsageError(
            f"input image {str(path)!r} is not an image file Pillow can read (empty, or another "
            f"kind of file); use one of {', '.join(IMAGE_SUFFIXES)}"
        ) from None
    with im:
        if im.width * im.height > max_pixels:
            raise UsageError(
                f"input image {str(path)!r} is {im.width}x{im.height} = {im.width * im.height} "
                f"pixels, more than the limit of {max_pixels} (raise it with --max-pixels)"
            )
        try:
            im.load()
        except (OSError, SyntaxError, EOFError, struct.error, zlib.error) as e:
            raise UsageError(
                f"input image {str(path)!r} is truncated or corrupt ({type(e).__name__}: {e})"
            ) from None
        if im.format == "PNG":
            check_png_rows(path)  # Pillow fills missing rows with black without a word
        try:
            return _to_rgb(im)
        except ValueError as e:  # a mode with no RGB meaning
            raise UsageError(f"input image {str(path)!r} (mode {im.mode}): {e}") from None


@contextlib.contextmanager
def _own_size_check() -> Iterator[None]:
    """Pillow's decompression-bomb check off while :func:`read_image` applies its own limit."""
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def _to_rgb(im: Image.Image) -> tuple[Tensor, Image.Image | None]:
    alpha = None
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("LA", "La", "PA", "RGBA", "RGBa"):
        im = im.convert("RGBA")  # un-premultiplies La/RGBa
        alpha = im.getchannel("A")
    if im.mode in SIXTEEN_BIT:
        grey = np.asarray(im).astype(np.float32).clip(0, 65535) / 65535
        x = torch.from_numpy(grey).unsqueeze(0).expand(3, -1, -1).contiguous()
        return x, alpha
    if im.mode == "F":
        raise UsageError("32-bit float pixels have no defined range; save it as 8- or 16-bit")
    return to_tensor(im.convert("RGB")).float() / 255, alpha


def write_image(path: str | Path, rgb: Tensor, alpha: Image.Image | None = None) -> Image.Image:
    """Write a ``(3, H, W)`` float tensor in [0, 1] as an 8-bit image (format from the suffix).

    ``alpha`` (a band of the input's size) is resized bicubically to the output and kept where
    the format stores it (:data:`ALPHA_FORMATS`), else dropped. Written atomically.
    """
    from ..io import atomic_write, make_parent

    path = Path(path)
    fmt = image_format(path)
    image = to_image(rgb)
    if alpha is not None and fmt in ALPHA_FORMATS:
        image.putalpha(alpha.resize(image.size, Image.Resampling.BICUBIC))
    make_parent(path, "output image")
    atomic_write(path, lambda tmp: image.save(tmp, format=fmt))
    return image


def image_format(path: Path) -> str:
    """Pillow's format name for ``path``'s suffix; ``ValueError`` listing the known suffixes."""
    known = Image.registered_extensions()
    fmt = known.get(path.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise UsageError(
            f"output image {str(path)!r}: unknown image suffix {path.suffix!r}; use one of "
            f"{', '.join(IMAGE_SUFFIXES)}"
        )
    return fmt


def bicubic_pair(hr: Image.Image, scale: int) -> tuple[Image.Image, Image.Image]:
    """Crop ``hr`` to a multiple of ``scale`` and downscale it bicubically: ``(lr, hr)``."""
    w, h = (hr.width // scale) * scale, (hr.height // scale) * scale
    if w == 0 or h == 0:
        raise UsageError(f"image of {hr.width}x{hr.height} px is smaller than the scale {scale}")
    hr = hr.crop((0, 0, w, h))
    return hr.resize((w // scale, h // scale), Image.Resampling.BICUBIC), hr


def bicubic_upscale(lr: Tensor, scale: int) -> Tensor:
    """Pillow's bicubic upscaling of a ``(3, h, w)`` uint8 tensor: the reference SR method."""
    image = Image.fromarray(lr.permute(1, 2, 0).numpy(), "RGB")
    up = image.resize((image.width * scale, image.height * scale), Image.Resampling.BICUBIC)
    return to_tensor(up)


class SRPairs:
    """LR/HR pairs of whole images, stored as uint8 tensors."""

    def __init__(self, images: Sequence[tuple[str, Image.Image]], scale: int) -> None:
        if scale < 1:
            raise UsageError(f"scale must be a positive integer, got {scale!r}")
        self.scale = scale
        self.names = [n for n, _ in images]
        self.lr: list[Tensor] = []
        self.hr: list[Tensor] = []
        for _, image in images:
            lr, hr = bicubic_pair(image, scale)
            self.lr.append(to_tensor(lr))
            self.hr.append(to_tensor(hr))


class SRTestSet(Dataset):
    """Whole test images: item ``i`` is ``(lr, hr)`` as float tensors in [0, 1] (batch size 1)."""

    def __init__(self, pairs: SRPairs) -> None:
        self.pairs = pairs
        self.scale = pairs.scale

    def __len__(self) -> int:
        return len(self.pairs.lr)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.pairs.lr[i].float() / 255, self.pairs.hr[i].float() / 255


class SRPatches(Dataset):
    """Random aligned LR/HR patches with flips and 90-degree rotations, for training.

    An epoch has ``length`` patches, image ``i % n_images`` for item ``i``. The randomness of item
    ``i`` in epoch ``e`` comes from ``(seed, e, i)``, so runs are reproducible whatever the number
    of loader workers, and resuming at an epoch draws what the uninterrupted run would have.
    """

    def __init__(
        self, pairs: SRPairs, patch_size: int, length: int, seed: int = 0, augment: bool = True
    ) -> None:
        for name, lr in zip(pairs.names, pairs.lr, strict=True):
            if min(lr.shape[1:]) < patch_size:
                raise UsageError(
                    f"data.patch_size {patch_size} is larger than the LR image {name!r} "
                    f"({lr.shape[2]}x{lr.shape[1]} px at scale {pairs.scale})"
                )
        self.pairs, self.patch_size, self.length = pairs, patch_size, length
        self.seed, self.augment, self.epoch = seed, augment, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        rng = np.random.default_rng((self.seed, self.epoch, i))
        k = i % len(self.pairs.lr)
        lr, hr, p, s = self.pairs.lr[k], self.pairs.hr[k], self.patch_size, self.pairs.scale
        y = int(rng.integers(0, lr.shape[1] - p + 1))
        x = int(rng.integers(0, lr.shape[2] - p + 1))
        lr = lr[:, y : y + p, x : x + p]
        hr = hr[:, y * s : (y + p) * s, x * s : (x + p) * s]
        if self.augment:
            hflip, vflip, rot = rng.integers(0, 2, size=3)
            dims = [d for d, f in ((2, hflip), (1, vflip)) if f]
            if dims:
                lr, hr = lr.flip(dims), hr.flip(dims)
            if rot:
                lr, hr = lr.transpose(1, 2), hr.transpose(1, 2)
        return lr.float() / 255, hr.float() / 255


def load_pairs(folder: str | None, embedded: Sequence[str], scale: int) -> SRPairs:
    """Pairs from a folder of HR images, or from the embedded photos when ``folder`` is None."""
    images = folder_images(folder) if folder else embedded_images(embedded)
    return SRPairs(images, scale)
