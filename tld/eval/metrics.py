"""Distribution metrics on image features: FID, KID and k-NN precision/recall.

All functions take feature arrays of shape (N, D) (rows are images) and return plain floats.
- FID (Heusel et al. 2017): the Frechet distance between Gaussians fitted to the two sets.
- KID (Binkowski et al. 2018): the unbiased MMD^2 with the cubic polynomial kernel
  k(x, y) = (x.y / d + 1)^3, averaged over random subsets (the clean-fid / torch-fidelity convention).
- Precision/recall (Kynkaenniemi et al. 2019): each set's manifold is the union of balls reaching
  each point's k-th nearest neighbour; precision is the share of fake points inside the real
  manifold, recall the share of real points inside the fake one.
"""

from __future__ import annotations

import warnings

import numpy as np

from tld.errors import TLDError, check_int

# Below this many samples FID is visibly biased upwards (Chong & Forsyth 2020); 2048 is the
# usual floor for Inception features (it equals their dimension).
MIN_STABLE_FID_N = 2048


class SmallSampleWarning(UserWarning):
    """FID from too few samples: biased upwards, only comparable at the same N."""


def check_features(features: np.ndarray, name: str = "features", min_rows: int = 2) -> np.ndarray:
    """The features as a float64 (N, D) array; a TLDError for other shapes, too few rows or NaN/inf."""
    arr = np.asarray(features)
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise TLDError(f"{name} must be a 2-D (N, D) array, got shape {arr.shape}")
    if arr.shape[0] < min_rows:
        raise TLDError(f"{name} needs at least {min_rows} rows (images), got {arr.shape[0]}")
    if not np.issubdtype(arr.dtype, np.number):
        raise TLDError(f"{name} must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise TLDError(
            f"{name} has NaN/inf in {int(bad.sum())} of {len(arr)} rows (first: row {int(bad.argmax())})"
        )
    return arr


def _check_pair(a: np.ndarray, b: np.ndarray, min_rows: int = 2) -> tuple[np.ndarray, np.ndarray]:
    a, b = check_features(a, "first features", min_rows), check_features(b, "second features", min_rows)
    if a.shape[1] != b.shape[1]:
        raise TLDError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]} (same extractor for both?)")
    return a, b


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of (N, D) features, in float64."""
    x = check_features(features)
    return x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (negative eigenvalues -> 0)."""
    vals, vecs = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)).

    tr((S1 S2)^(1/2)) is computed as the sum of the square roots of the eigenvalues of the
    symmetric PSD matrix S1^(1/2) S2 S1^(1/2), which has the same spectrum as S1 S2. That route is
    real by construction and needs no eps offset when a covariance is singular (N < D), where a
    general sqrtm of S1 S2 can return complex or inf values.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise TLDError(
            f"Frechet distance needs means (D,) and covariances (D, D) of one D; got {mu1.shape}, "
            f"{s1.shape}, {mu2.shape}, {s2.shape}"
        )
    for name, arr in (("mu1", mu1), ("sigma1", s1), ("mu2", mu2), ("sigma2", s2)):
        if not np.isfinite(arr).all():
            raise TLDError(f"Frechet distance: {name} has NaN/inf entries")
    root1 = _psd_sqrt(s1)
    eig = np.linalg.eigvalsh(root1 @ s2 @ root1)
    # Rounding makes some eigenvalues of a PSD product slightly negative; anything beyond
    # rounding means a covariance was not PSD.
    scale = max(np.abs(eig).max(initial=0.0), 1e-300)
    if eig.min(initial=0.0) < -1e-6 * scale:
        raise TLDError(
            f"Frechet distance: covariances are not positive semi-definite (eigenvalue {eig.min():.3g})"
        )
    tr_covmean = np.sqrt(np.clip(eig, 0, None)).sum()
    diff = mu1 - mu2
    value = diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean
    return float(max(value, 0.0))


def warn_if_small(n: int, dim: int, what: str = "FID") -> None:
    """Warn when N is below MIN_STABLE_FID_N or the feature dimension (a rank-deficient covariance)."""
    if n < MIN_STABLE_FID_N or n < dim:
        warnings.warn(
            f"{what} from N={n} samples ({dim}-d features) is biased upwards and only comparable "
            f"with other {what}s at the same N; use N >= {max(MIN_STABLE_FID_N, dim)} for a stable value",
            SmallSampleWarning,
            stacklevel=3,
        )


def fid_from_features(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """FID between two feature sets (N_a, D) and (N_b, D); warns when either N is small."""
    a, b = _check_pair(feats_a, feats_b)
    warn_if_small(min(len(a), len(b)), a.shape[1])
    return frechet_distance(*feature_stats(a), *feature_stats(b))


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    m, n = len(x), len(y)
    xx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    yy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(xx + yy - 2 * kxy.mean())


def kid_from_features(
    feats_a: np.ndarray,
    feats_b: np.ndarray,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """KID: (mean, std) of the unbiased MMD^2 over `subsets` random subsets of each set.

    Each subset draws min(subset_size, N_a, N_b) rows of each set without replacement; the
    estimate is unbiased at any size, so unlike FID it may be compared across N (and may be < 0).
    """
    a, b = _check_pair(feats_a, feats_b)
    check_int(subsets, "KID subsets", 1)
    check_int(subset_size, "KID subset_size", 2)
    size = min(subset_size, len(a), len(b))
    rng = np.random.default_rng(seed)
    values = np.array(
        [
            _mmd2_unbiased(
                a[rng.choice(len(a), size, replace=False)], b[rng.choice(len(b), size, replace=False)]
            )
            for _ in range(subsets)
        ]
    )
    return float(values.mean()), float(values.std())


def _pairwise_sq_dists(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    d = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2 * x @ y.T
    return np.clip(d, 0, None)


def _knn_radii(x: np.ndarray, k: int, chunk: int) -> np.ndarray:
    """Squared distance from each row to its k-th nearest other row."""
    radii = np.empty(len(x))
    for start in range(0, len(x), chunk):
        d = _pairwise_sq_dists(x[start : start + chunk], x)
        # Column k of the sorted row: column 0 is the point itself (distance 0).
        radii[start : start + chunk] = np.partition(d, k, axis=1)[:, k]
    return radii


def _coverage(points: np.ndarray, centres: np.ndarray, radii: np.ndarray, chunk: int) -> float:
    """Share of `points` inside at least one ball (centre, squared radius)."""
    inside = np.zeros(len(points), dtype=bool)
    for start in range(0, len(points), chunk):
        d = _pairwise_sq_dists(points[start : start + chunk], centres)
        inside[start : start + chunk] = (d <= radii[None, :]).any(axis=1)
    return float(inside.mean())


def precision_recall(
    feats_real: np.ndarray, feats_fake: np.ndarray, k: int = 3, chunk: int = 1024
) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) with k-NN manifolds: (precision, recall)."""
    check_int(k, "precision/recall k", 1)
    real, fake = _check_pair(feats_real, feats_fake, min_rows=k + 1)
    precision = _coverage(fake, real, _knn_radii(real, k, chunk), chunk)
    recall = _coverage(real, fake, _knn_radii(fake, k, chunk), chunk)
    return precision, recall
