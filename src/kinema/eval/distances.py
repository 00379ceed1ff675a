"""Distances between two sets of video features: Fréchet distance and polynomial-kernel MMD.

- Fréchet distance between Gaussians fitted to each set (FID / FVD):
      d^2 = |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))
  computed with scipy.linalg.sqrtm. It is called FVD only for the Kinetics-400 I3D (the
  extractor FVD was defined with); with any other extractor it is "FD-<extractor name>".
- KVD: the unbiased MMD^2 with the polynomial kernel k(x, y) = (x.y / D + 1)^3, the estimator of
  KID (Binkowski et al. 2018), which StyleGAN-V uses on I3D features.
- JEDi's form (Luo et al. 2024): 100 x the biased MMD^2 with k(x, y) = (x.y / D)^2.

`distances(a, b)` checks that both sets come from one extractor fed the same way first.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from kinema.errors import KinemaError
from kinema.eval.features import FeatureStats

I3D_NAMES = ("i3d-kinetics400",)


def frechet_distance(mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu_a, cov_a) and N(mu_b, cov_b). A singular product gets `eps`
    on both diagonals (as pytorch-fid does); a tiny imaginary part from sqrtm's rounding is dropped."""
    mu_a, mu_b = np.atleast_1d(mu_a).astype(np.float64), np.atleast_1d(mu_b).astype(np.float64)
    cov_a, cov_b = np.atleast_2d(cov_a).astype(np.float64), np.atleast_2d(cov_b).astype(np.float64)
    if mu_a.shape != mu_b.shape or cov_a.shape != cov_b.shape or cov_a.shape != (len(mu_a), len(mu_a)):
        raise KinemaError(f"Fréchet distance needs means [D] and covariances [D, D] of one D; got {mu_a.shape}, "
                          f"{cov_a.shape}, {mu_b.shape}, {cov_b.shape}")
    root = scipy.linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(root).all():
        offset = eps * np.eye(len(mu_a))
        root = scipy.linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    if np.iscomplexobj(root):
        if np.abs(root.imag).max() > 1e-3 * max(1.0, np.abs(root.real).max()):
            raise KinemaError("Fréchet distance: the covariance product has a large imaginary square root; "
                              "use more clips than feature dimensions")
        root = root.real
    diff = mu_a - mu_b
    return float(max(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(root), 0.0))


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int, gamma: float | None, coef0: float) -> np.ndarray:
    """k(x, y) = (gamma x.y + coef0)^degree, gamma defaulting to 1 / D: [N, D], [M, D] -> [N, M]"""
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    return (gamma * (x @ y.T) + coef0) ** degree


def polynomial_mmd(x: np.ndarray, y: np.ndarray, degree: int = 3, gamma: float | None = None, coef0: float = 1.0,
                   unbiased: bool = True) -> float:
    """MMD^2 between samples x [N, D] and y [M, D] under the polynomial kernel. Unbiased: the
    within-set means leave out the diagonal (U-statistic); biased: plain means (V-statistic)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    kxx, kyy = polynomial_kernel(x, x, degree, gamma, coef0), polynomial_kernel(y, y, degree, gamma, coef0)
    kxy = polynomial_kernel(x, y, degree, gamma, coef0)
    if not unbiased:
        return float(kxx.mean() + kyy.mean() - 2 * kxy.mean())
    n, m = len(x), len(y)
    if min(n, m) < 2:
        raise KinemaError("an unbiased MMD needs at least 2 clips in each set")
    within = (kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(within - 2 * kxy.mean())


def kvd(x: np.ndarray, y: np.ndarray) -> float:
    return polynomial_mmd(x, y, degree=3, gamma=None, coef0=1.0, unbiased=True)


def jedi(x: np.ndarray, y: np.ndarray) -> float:
    return 100.0 * polynomial_mmd(x, y, degree=2, gamma=None, coef0=0.0, unbiased=False)


def frechet_name(a: FeatureStats) -> str:
    return "FVD" if a.spec.name in I3D_NAMES else f"FD-{a.spec.name}"


def distances(a: FeatureStats, b: FeatureStats) -> dict[str, float]:
    """{"FVD" or "FD-<extractor>": ..., "KVD": ..., "JEDi-form": ...} between two feature sets."""
    a.check_comparable(b)
    return {frechet_name(a): frechet_distance(a.mean, a.cov, b.mean, b.cov),
            "KVD": kvd(a.features, b.features), "JEDi-form": jedi(a.features, b.features)}
