"""Image transforms written with torch ops (and Pillow for resizing): no torchvision.

Two kinds:
- batched ops on uint8 tensors ``(N, C, H, W)`` for the in-memory data sets (Fashion-MNIST,
  CIFAR), driven by precomputed uniforms so one call augments a whole batch;
- the authors' ImageNet pipeline for one PIL image, driven by a per-sample generator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# AlexNet's PCA of ImageNet RGB pixels in [0, 1] (eigenvalues; eigenvectors as columns),
# the values of fb.resnet.torch and the authors' ``Lighting``.
IMAGENET_PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_PCA_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)
_GRAY = (0.2989, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision's rgb_to_grayscale


# ----------------------------------------------------------------------------- batched uint8
def normalize_uint8(
    images: torch.Tensor, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """uint8 ``(N, C, H, W)`` -> float32 ``(x / 255 - mean) / std`` in one multiply-subtract."""
    c = images.shape[1]
    std_t = torch.tensor(std, dtype=torch.float32).view(1, c, 1, 1)
    scale = 1.0 / (255.0 * std_t)
    shift = torch.tensor(mean, dtype=torch.float32).view(1, c, 1, 1) / std_t
    return images.to(torch.float32).mul_(scale).sub_(shift)


def random_crop_flip(images: torch.Tensor, padding: int, u: torch.Tensor) -> torch.Tensor:
    """Pad by ``padding`` zeros, crop back to the input size, flip horizontally; per sample.

    ``u`` holds three uniforms per sample (row offset, column offset, flip if < 0.5), so the
    result is a pure function of the images and ``u``. Crop and flip are one flat gather (2x faster than 4-D advanced indexing).
    """
    n, c, h, w = images.shape
    if u.shape != (n, 3):
        raise ValueError(f"random_crop_flip needs uniforms of shape ({n}, 3), got {tuple(u.shape)}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    padded = F.pad(images, (padding, padding, padding, padding)) if padding else images
    hp, wp = h + 2 * padding, w + 2 * padding
    span = 2 * padding + 1
    top = (u[:, 0] * span).long().clamp_(max=span - 1)
    left = (u[:, 1] * span).long().clamp_(max=span - 1)
    flip = u[:, 2] < 0.5
    cols = torch.arange(w).expand(n, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols) + left[:, None]  # (N, W)
    # Flat indices into the padded batch: sample, channel, row and (flipped) column offsets.
    start = torch.arange(n) * (c * hp * wp) + top * wp
    idx = (
        start[:, None, None, None]
        + (torch.arange(c) * (hp * wp))[None, :, None, None]
        + (torch.arange(h) * wp)[None, None, :, None]
        + cols[:, None, None, :]
    )
    return padded.reshape(-1)[idx]


# ------------------------------------------------------------------------- ImageNet (one image)
def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float32 ``(3, H, W)`` in [0, 1]."""
    arr = np.array(img.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr).permute(2, 0, 1).to(torch.float32).div_(255.0)


def random_resized_crop_box(
    width: int,
    height: int,
    scale: tuple[float, float],
    generator: torch.Generator,
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """Box ``(left, top, right, bottom)`` of a random area fraction and aspect (Inception crop).

    Same algorithm as torchvision's RandomResizedCrop: ten tries, then a centre crop.
    """
    area = width * height
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        r = torch.rand(4, generator=generator, dtype=torch.float64).tolist()
        target = area * (scale[0] + (scale[1] - scale[0]) * r[0])
        aspect = math.exp(log_lo + (log_hi - log_lo) * r[1])
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = min(int(r[2] * (height - h + 1)), height - h)
            left = min(int(r[3] * (width - w + 1)), width - w)
            return left, top, left + w, top + h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    top, left = (height - h) // 2, (width - w) // 2
    return left, top, left + w, top + h


def resize_shorter(img: Image.Image, size: int) -> Image.Image:
    """Resize so the shorter side is ``size`` (bilinear, antialiased), keeping the aspect."""
    w, h = img.size
    if min(w, h) == size:
        return img
    if w <= h:
        new = (size, int(size * h / w))
    else:
        new = (int(size * w / h), size)
    return img.resize(new, Image.BILINEAR)


def center_crop(img: Image.Image, size: int) -> Image.Image:
    """Central ``size`` x ``size`` square (the image must be at least that large)."""
    w, h = img.size
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def _blend(a: torch.Tensor, b: torch.Tensor | float, factor: float) -> torch.Tensor:
    return (factor * a + (1.0 - factor) * b).clamp_(0.0, 1.0)


def _gray(img: torch.Tensor) -> torch.Tensor:
    return (img * torch.tensor(_GRAY).view(3, 1, 1)).sum(0, keepdim=True)


def color_jitter(
    img: torch.Tensor,
    generator: torch.Generator,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.4,
) -> torch.Tensor:
    """Random brightness, contrast and saturation, in random order (torchvision's semantics).

    Each factor is uniform in ``[max(0, 1 - s), 1 + s]``; ``img`` is float ``(3, H, W)`` in [0, 1].
    """
    r = torch.rand(3, generator=generator, dtype=torch.float64).tolist()
    order = torch.randperm(3, generator=generator).tolist()
    strengths = (brightness, contrast, saturation)
    for op in order:
        s = strengths[op]
        if s <= 0:
            continue
        lo = max(0.0, 1.0 - s)
        f = lo + (1.0 + s - lo) * r[op]
        if op == 0:
            img = (img * f).clamp_(0.0, 1.0)
        elif op == 1:
            img = _blend(img, _gray(img).mean().item(), f)
        else:
            img = _blend(img, _gray(img), f)
    return img


def lighting(img: torch.Tensor, alphastd: float, generator: torch.Generator) -> torch.Tensor:
    """AlexNet PCA lighting noise: add ``eigvec @ (alpha * eigval)``, ``alpha ~ N(0, alphastd)``.

    Applied to the [0, 1] tensor, where the eigenvalues belong (the authors apply it to the
    uint8 PIL image, where it is nearly a no-op; we follow AlexNet and fb.resnet.torch).
    """
    if alphastd <= 0:
        return img
    alpha = torch.randn(3, generator=generator) * alphastd
    eigval = torch.tensor(IMAGENET_PCA_EIGVAL)
    eigvec = torch.tensor(IMAGENET_PCA_EIGVEC)
    rgb = eigvec @ (alpha * eigval)
    return img + rgb.view(3, 1, 1)


def normalize(img: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(img - mean) / std`` per channel of a float ``(C, H, W)`` tensor."""
    c = img.shape[0]
    mean_t = torch.tensor(mean, dtype=img.dtype).view(c, 1, 1)
    std_t = torch.tensor(std, dtype=img.dtype).view(c, 1, 1)
    return (img - mean_t) / std_t


class ImageNetTrain:
    """The authors' ImageNet training augmentation ("imagenet1k_mobile").

    Random resized crop (area ``scale``, default (0.25, 1)), colour jitter 0.4, PCA lighting
    0.1, horizontal flip, normalise.
    """

    def __init__(
        self,
        size: int = 224,
        scale: tuple[float, float] = (0.25, 1.0),
        jitter: float = 0.4,
        lighting: float = 0.1,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"crop scale must satisfy 0 < lo <= hi <= 1, got {scale}")
        self.size, self.scale, self.jitter, self.lighting = size, tuple(scale), jitter, lighting
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, img: Image.Image, generator: torch.Generator) -> torch.Tensor:
        img = img.convert("RGB")
        box = random_resized_crop_box(img.width, img.height, self.scale, generator)
        img = img.resize((self.size, self.size), Image.BILINEAR, box=box)
        x = pil_to_tensor(img)
        x = color_jitter(x, generator, self.jitter, self.jitter, self.jitter)
        x = lighting(x, self.lighting, generator)
        if torch.rand(1, generator=generator).item() < 0.5:
            x = x.flip(-1)
        return normalize(x, self.mean, self.std)


class ImageNetEval:
    """Validation transform: shorter side to ``resize`` (256), centre crop ``size`` (224)."""

    def __init__(
        self,
        size: int = 224,
        resize: int | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        self.size = size
        self.resize = resize if resize is not None else int(round(size / 0.875))
        if self.resize < size:
            raise ValueError(f"resize ({self.resize}) must be >= the crop size ({size})")
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, img: Image.Image, generator: torch.Generator | None = None) -> torch.Tensor:
        img = center_crop(resize_shorter(img.convert("RGB"), self.resize), self.size)
        return normalize(pil_to_tensor(img), self.mean, self.std)
