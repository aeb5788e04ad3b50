"""Full-reference pixel metrics of one image pair: PSNR, SSIM and MAE (numpy, float64).

Every function takes two images as float arrays [H,W,3] in [0,1] (`to_unit_float` turns the
uint8 RGB that `read_image` returns into that) and gives one number per pair; the tables
average these per-image numbers (docs/design.md §10: "per image then averaged").

PSNR of identical images is +inf (the MSE is 0). It is returned as such, not capped: any cap
(e.g. 100 dB) would be an arbitrary number entering the mean. `tables.summarize` leaves infinite
values out of the mean and std and reports how many it left out.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy.ndimage import gaussian_filter, uniform_filter

SSIMVariant = Literal["skimage", "gaussian"]
SSIM_VARIANTS = {
    "skimage": "7×7 uniform window, sample covariances (scikit-image's default)",
    "gaussian": "11×11 Gaussian window σ = 1.5, population covariances (Wang et al. 2004)",
}

# Wang et al. 2004 constants, for data_range = 1.
_K1, _K2 = 0.01, 0.03
_GAUSSIAN_SIGMA = 1.5
# truncate 3.5 gives radius int(3.5·1.5 + 0.5) = 5, the 11×11 window of Wang et al. (as scikit-image sets it).
_GAUSSIAN_TRUNCATE = 3.5
_UNIFORM_SIZE = 7


def to_unit_float(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 [H,W,3] → float64 [H,W,3] in [0,1]."""
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        described = f"{rgb.dtype} {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise ValueError(f"to_unit_float takes RGB uint8 [H,W,3] (as read_image returns); got {described}")
    return rgb.astype(np.float64) / 255.0


def _check_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(
            f"metrics take two images of the same shape [H,W,3] in [0,1]; got {a.shape} and {b.shape}. "
            "Resize the references to the outputs' size before evaluating."
        )
    return a, b


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """10·log10(1 / MSE) in dB for images in [0,1]; +inf when the images are identical."""
    a, b = _check_pair(a, b)
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0.0 else 10.0 * np.log10(1.0 / mse)


def mae(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference over all pixels and channels, images in [0,1]."""
    a, b = _check_pair(a, b)
    return float(np.mean(np.abs(a - b)))


def ssim(a: np.ndarray, b: np.ndarray, variant: SSIMVariant = "skimage") -> float:
    """Mean SSIM over the three channels (each channel's SSIM map averaged, border strip excluded).

    variant "skimage": scikit-image's default, a 7×7 uniform window with sample covariances
      (N−1), = `structural_similarity(a, b, data_range=1, channel_axis=-1)`.
    variant "gaussian": Wang et al. 2004, an 11×11 Gaussian window σ = 1.5 with population
      covariances, = the same call with `gaussian_weights=True, sigma=1.5, use_sample_covariance=False`.
    Both use data_range = 1, K1 = 0.01, K2 = 0.03, mirror ('reflect') padding, and leave out the
    window radius around the border when averaging the SSIM map, as scikit-image does.
    """
    a, b = _check_pair(a, b)
    if variant == "skimage":
        radius = (_UNIFORM_SIZE - 1) // 2
        window_pixels = _UNIFORM_SIZE**2
        covariance_scale = window_pixels / (window_pixels - 1)

        def local_mean(x: np.ndarray) -> np.ndarray:
            return uniform_filter(x, size=_UNIFORM_SIZE, mode="reflect")

    elif variant == "gaussian":
        radius = int(_GAUSSIAN_TRUNCATE * _GAUSSIAN_SIGMA + 0.5)
        covariance_scale = 1.0

        def local_mean(x: np.ndarray) -> np.ndarray:
            return gaussian_filter(x, sigma=_GAUSSIAN_SIGMA, truncate=_GAUSSIAN_TRUNCATE, mode="reflect")

    else:
        raise ValueError(f"unknown SSIM variant {variant!r}; choose one of {sorted(SSIM_VARIANTS)}")
    if min(a.shape[:2]) < 2 * radius + 1:
        raise ValueError(f"SSIM ({variant}) needs images of at least {2 * radius + 1}² pixels; got {a.shape[:2]}")
    c1, c2 = _K1**2, _K2**2
    per_channel = []
    for channel in range(3):
        x, y = a[..., channel], b[..., channel]
        mean_x, mean_y = local_mean(x), local_mean(y)
        var_x = covariance_scale * (local_mean(x * x) - mean_x * mean_x)
        var_y = covariance_scale * (local_mean(y * y) - mean_y * mean_y)
        cov_xy = covariance_scale * (local_mean(x * y) - mean_x * mean_y)
        ssim_map = ((2 * mean_x * mean_y + c1) * (2 * cov_xy + c2)) / (
            (mean_x**2 + mean_y**2 + c1) * (var_x + var_y + c2)
        )
        # The border strip is filtered partly from mirrored pixels, so it is left out of the mean.
        per_channel.append(ssim_map[radius:-radius, radius:-radius].mean())
    return float(np.mean(per_channel))
