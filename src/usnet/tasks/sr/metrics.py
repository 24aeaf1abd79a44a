"""Image-quality metrics of super-resolution: PSNR and SSIM on the Y channel, as SR benchmarks do.

The output is quantised to 8 bits, converted to the luma Y of ITU-R BT.601 (MATLAB's
``rgb2ycbcr``, as in EDSR), and ``border`` pixels (the scale) are cropped from every side.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ...errors import UsageError

#: BT.601 luma from RGB in [0, 1], giving Y in [16, 235] / 255.
_Y_WEIGHTS = (65.481, 128.553, 24.966)


def rgb_to_y(img: Tensor) -> Tensor:
    """Luma (BT.601, in [16, 235] / 255) of ``(..., 3, H, W)`` RGB images in [0, 1]."""
    if img.shape[-3] != 3:
        raise UsageError(f"rgb_to_y needs 3 channels at dim -3, got shape {tuple(img.shape)}")
    w = torch.tensor(_Y_WEIGHTS, dtype=img.dtype, device=img.device).view(3, 1, 1)
    return (img * w).sum(dim=-3) / 255.0 + 16.0 / 255.0


def _prepare(sr: Tensor, hr: Tensor, border: int) -> tuple[Tensor, Tensor]:
    if sr.shape != hr.shape:
        raise UsageError(f"SR and HR shapes differ: {tuple(sr.shape)} vs {tuple(hr.shape)}")
    sr = sr.detach().float().clamp(0, 1).mul(255).round().div(255)  # an 8-bit image, as saved
    y_sr, y_hr = rgb_to_y(sr), rgb_to_y(hr.detach().float())
    if border > 0:
        y_sr, y_hr = (
            y_sr[..., border:-border, border:-border],
            y_hr[..., border:-border, border:-border],
        )
    return y_sr, y_hr


def psnr_y(sr: Tensor, hr: Tensor, border: int = 0) -> float:
    """PSNR (dB) on Y of one ``(3, H, W)`` image pair in [0, 1], ``border`` pixels cropped."""
    y_sr, y_hr = _prepare(sr, hr, border)
    mse = float(((y_sr.double() - y_hr.double()) ** 2).mean())
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def ssim_y(sr: Tensor, hr: Tensor, border: int = 0) -> float:
    """SSIM on Y of one ``(3, H, W)`` image pair (Wang et al.: Gaussian window, sigma 1.5)."""
    try:
        from skimage.metrics import structural_similarity
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("SSIM needs scikit-image: pip install 'usnet[sr]'") from None
    y_sr, y_hr = _prepare(sr, hr, border)
    a = y_sr.cpu().numpy().astype(np.float64) * 255
    b = y_hr.cpu().numpy().astype(np.float64) * 255
    return float(
        structural_similarity(
            a, b, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
        )
    )
