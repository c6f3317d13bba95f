"""Measuring the domain shift between sites: simple per-volume features and a leave-one-out classifier.

After per-volume z-scoring, site identity should still be predictable from the intensity histogram
and gradient statistics (scanner/coil/noise signature). :func:`loo_site_accuracy` is a numpy
leave-one-out nearest-centroid classifier on standardized features.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from relkd_bench.data.preprocess import PreprocessConfig, normalize_intensity

__all__ = ["loo_site_accuracy", "site_features"]

_HIST_EDGES = np.linspace(-2.0, 4.0, 9)
_PCTS = (1, 5, 25, 50, 75, 95, 99)


def site_features(image: np.ndarray) -> np.ndarray:
    """Feature vector of one volume ``[X, Y, Z]`` (any orientation, axial slices last).

    The volume is z-scored, then: histogram density on [-2, 4] (8 bins), 7 percentiles, and
    log-compressed gradient statistics: in-plane gradient magnitude (mean, percentiles 10/50/90/99,
    median over the darkest 20 % of voxels as a noise estimate), median absolute second difference
    (noise vs. blur) and through-plane differences (slice thickness / partial volume).

    Returns:
        float64 array ``[F]``.
    """
    z = normalize_intensity(image, PreprocessConfig(normalize="zscore"))
    hist, _ = np.histogram(z, bins=_HIST_EDGES, density=True)
    pct = np.percentile(z, _PCTS)
    gx, gy = np.gradient(z, axis=(0, 1))
    g = np.sqrt(gx * gx + gy * gy)
    dark = z <= np.percentile(z, 20)
    lap = np.abs(gx[2:, 1:-1] - gx[:-2, 1:-1] + gy[1:-1, 2:] - gy[1:-1, :-2]) if min(z.shape[:2]) > 4 else g
    gz = np.abs(np.diff(z, axis=2)) if z.shape[2] > 1 else g
    gstats = [g.mean(), *np.percentile(g, (10, 50, 90, 99)), np.median(g[dark]), np.median(lap),
              np.median(gz), gz.mean()]
    return np.concatenate([hist, pct, np.log1p(gstats)]).astype(np.float64)


def loo_site_accuracy(features: np.ndarray, labels: Sequence[str], method: str = "centroid") -> float:
    """Leave-one-out accuracy of predicting ``labels`` from ``features [N, F]``.

    Each fold standardizes features with the training fold's mean/std, then predicts the label of the
    nearest class centroid (``method="centroid"``) or nearest neighbour (``"1nn"``) in Euclidean distance.
    """
    x = np.asarray(features, np.float64)
    y = np.asarray(labels)
    correct = 0
    for i in range(len(y)):
        tr = np.arange(len(y)) != i
        mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-8
        xt, xi = (x[tr] - mu) / sd, (x[i] - mu) / sd
        if method == "centroid":
            classes = np.unique(y[tr])
            cents = np.stack([xt[y[tr] == c].mean(0) for c in classes])
            pred = classes[np.argmin(((cents - xi) ** 2).sum(1))]
        elif method == "1nn":
            pred = y[tr][np.argmin(((xt - xi) ** 2).sum(1))]
        else:
            raise ValueError(f"unknown method {method!r}")
        correct += int(pred == y[i])
    return correct / len(y)
