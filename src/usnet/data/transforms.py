"""Image transforms.

- The authors' ImageNet pipeline for one PIL image: ``torchvision.transforms.v2`` ops, plus
  AlexNet's PCA lighting (which torchvision lacks), seeded per sample.
- Batched ops on uint8 tensors ``(N, C, H, W)`` for the in-memory data sets (Fashion-MNIST,
  CIFAR), driven by precomputed uniforms so one call augments a whole batch with a different
  crop and flip per sample; torchvision's transforms draw one set of parameters per call, so
  they would augment a batch alike (or cost a Python call per image).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import v2

from ..errors import UsageError
from .images import rgb_pixels

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
        raise UsageError(f"random_crop_flip needs uniforms of shape ({n}, 3), got {tuple(u.shape)}")
    if padding < 0:
        raise UsageError(f"padding must be >= 0, got {padding}")
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
class Lighting(torch.nn.Module):
    """AlexNet PCA lighting noise (torchvision has none): add ``eigvec @ (alpha * eigval)``,
    ``alpha ~ N(0, alphastd)``, to a float ``(3, H, W)`` image in [0, 1].

    Applied to the [0, 1] tensor, where the eigenvalues belong (the authors apply it to the
    uint8 PIL image, where it is nearly a no-op; we follow AlexNet and fb.resnet.torch).
    """

    def __init__(self, alphastd: float = 0.1) -> None:
        super().__init__()
        self.alphastd = float(alphastd)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return lighting(img, self.alphastd)


def lighting(
    img: torch.Tensor, alphastd: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The functional form of :class:`Lighting` (``generator``: default, the global one)."""
    if alphastd <= 0:
        return img
    alpha = torch.randn(3, generator=generator) * alphastd
    rgb = torch.tensor(IMAGENET_PCA_EIGVEC) @ (alpha * torch.tensor(IMAGENET_PCA_EIGVAL))
    return img + rgb.view(3, 1, 1).to(img.dtype)


class _PerSample:
    """Runs a torchvision pipeline with the global CPU generator seeded from the sample's own
    generator (seeded by data set seed, epoch and index), so any worker gives any sample the
    same augmentation; the global state is restored afterwards."""

    pipeline: v2.Compose

    def __call__(self, img: Image.Image, generator: torch.Generator | None = None) -> torch.Tensor:
        pixels = rgb_pixels(img)  # 16-bit greyscale keeps its values
        if generator is None:
            return self.pipeline(pixels).as_subclass(torch.Tensor)
        rng = torch.default_generator  # CPU only (torch.manual_seed would also queue CUDA)
        state = rng.get_state()
        rng.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
        try:
            return self.pipeline(pixels).as_subclass(torch.Tensor)
        finally:
            rng.set_state(state)


class ImageNetTrain(_PerSample):
    """The authors' ImageNet training augmentation ("imagenet1k_mobile"), in torchvision ops.

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
            raise UsageError(f"crop scale must satisfy 0 < lo <= hi <= 1, got {scale}")
        self.size, self.scale, self.jitter, self.lighting = size, tuple(scale), jitter, lighting
        self.pipeline = v2.Compose(
            [
                v2.RandomResizedCrop(size, scale=self.scale, antialias=True),
                v2.ToImage(),
                v2.ToDtype(torch.float32, scale=True),
                v2.ColorJitter(jitter, jitter, jitter),
                Lighting(lighting),
                v2.RandomHorizontalFlip(),
                v2.Normalize(mean, std),
            ]
        )


class ImageNetEval(_PerSample):
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
            raise UsageError(f"resize ({self.resize}) must be >= the crop size ({size})")
        self.pipeline = v2.Compose(
            [
                v2.Resize(self.resize, antialias=True),
                v2.CenterCrop(size),
                v2.ToImage(),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(mean, std),
            ]
        )
