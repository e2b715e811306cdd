"""Dimensionality reduction of failure features before clustering: none, PCA or UMAP (METHODS.md §3).

Fitted on a seeded sample of at most ``fit_rows`` rows and applied to all of them, so tens of
thousands of failures stay tractable; UMAP's ``transform`` places the rows outside the sample.
"""
from __future__ import annotations

import numpy as np

REDUCTIONS = ("none", "pca", "umap")


def sample_rows(n: int, limit: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded sample of ``min(n, limit)`` of ``n`` rows (all of them when ``n <= limit``)."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


def reduce(features: np.ndarray, method: str, *, components: int = 10, fit_rows: int = 5000,
           seed: int = 0) -> np.ndarray:
    """``features`` ``(N, D)`` reduced to ``(N, min(components, D, N - 1))`` ``float32`` (``none``: unchanged).

    ``pca``: principal components (whitened off; the scale of each kept component is meaningful to the
    clustering); ``umap``: 15 neighbours, distance 0, so clusters stay compact (the study's best pipeline)."""
    if method not in REDUCTIONS:
        raise ValueError(f"reduction {method!r} is not one of {REDUCTIONS}")
    x = np.asarray(features, np.float32)
    if method == "none" or len(x) < 3:
        return x
    k = max(1, min(components, x.shape[1], len(x) - 2))
    fit = x[sample_rows(len(x), fit_rows, seed)]
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=k, random_state=seed).fit(fit).transform(x).astype(np.float32)
    import umap  # numba compiles on first use (about 35 s): imported only when asked for

    model = umap.UMAP(n_components=k, n_neighbors=min(15, len(fit) - 1), min_dist=0.0, random_state=seed).fit(fit)
    return (model.embedding_ if len(fit) == len(x) else model.transform(x)).astype(np.float32)
