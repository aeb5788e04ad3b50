"""Fréchet Inception Distance from pool3 features, as pytorch-fid computes it (float64, scipy).

FID = ‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2·(Σ₁Σ₂)^½), with μ, Σ the mean and sample covariance (N − 1)
of each set's 2048-d features. With fewer images than feature dimensions (e.g. 1000 < 2048) the
covariances are rank-deficient and the estimate is biased upwards: compare FIDs only between
sets of the same size.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg

# pytorch-fid's defaults: the diagonal offset tried when (Σ₁Σ₂)^½ is not finite, and the largest
# imaginary part on its diagonal still taken as rounding error.
SINGULAR_OFFSET = 1e-6
IMAGINARY_TOLERANCE = 1e-3


def activation_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """features [N,D], N ≥ 2 → (μ [D], Σ [D,D]) in float64, Σ with the N − 1 normaliser."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(
            f"FID statistics need features [N,D] from at least 2 images; got shape {features.shape}. "
            "Evaluate more image pairs."
        )
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = SINGULAR_OFFSET
) -> float:
    """Fréchet distance between N(μ₁, Σ₁) and N(μ₂, Σ₂): μ [D], Σ [D,D], computed in float64.

    When the matrix square root of Σ₁Σ₂ is not finite, eps·I is added to both covariances and it is
    computed again (with a warning). A square root whose diagonal has an imaginary part above 1e-3
    is an error; smaller imaginary parts are rounding and are dropped.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(
            f"frechet_distance needs μ [D] and Σ [D,D] of the same D for both sets; got μ {mu1.shape}, {mu2.shape} "
            f"and Σ {sigma1.shape}, {sigma2.shape}"
        )
    covmean = _sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        warnings.warn(
            f"FID: the product of the covariances is singular; adding {eps} to their diagonals (as pytorch-fid does)",
            stacklevel=2,
        )
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=IMAGINARY_TOLERANCE):
            raise ValueError(
                f"FID: the square root of Σ₁Σ₂ has an imaginary part up to {np.max(np.abs(covmean.imag)):.3g}; "
                "the covariances are not valid (too few images, or NaN/Inf features)"
            )
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def _sqrtm(matrix: np.ndarray) -> np.ndarray:
    # Near-singular products are expected with few images; the finiteness check above decides,
    # as in pytorch-fid, so scipy's warning about them is not repeated for every call.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        return linalg.sqrtm(matrix)


def fid_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """FID between two sets of pool3 features [N₁,D] and [N₂,D]."""
    return frechet_distance(*activation_statistics(features1), *activation_statistics(features2))
