"""Clustering of (reduced) failure features, each method's hyper-parameters chosen by one internal index.

Methods (METHODS.md §3): ``kmeans``, ``dbscan``, ``hdbscan`` and ``hierarchical`` (Ward linkage, HUDD's
choice). Every candidate setting is scored by the same index, never by the ground truth (our design):

    index = silhouette of the clustered rows × share of rows clustered

the Euclidean silhouette (on a seeded sample of at most ``score_rows`` rows, noise left out)
says how well separated the clusters are; the factor keeps a density method from winning by calling
most rows noise. Fewer than two clusters score -1. The same index ranks pipelines against each other.
Known weakness: on the demo's failures it prefers a coarse two-cluster split over the finer clustering
that separates the planted scenarios (VLM + UMAP + DBSCAN: purity 0.94, coverage 1.00), so it is not yet
the index to pick a pipeline by.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import silhouette_score
from sklearn.neighbors import NearestNeighbors

from conceptlens.rootcause.reduce import sample_rows

CLUSTERINGS = ("kmeans", "dbscan", "hdbscan", "hierarchical")
NOISE = -1


@dataclass
class Clustering:
    """``labels`` ``int64 (N,)`` (``NOISE`` = -1 for rows no cluster takes), the internal ``index`` of the chosen
    setting and its ``params``; ``tried`` lists every ``(params, index)`` scored."""
    labels: np.ndarray
    index: float
    params: dict
    tried: list = field(default_factory=list)

    @property
    def clusters(self) -> int:
        return int(len(set(self.labels.tolist()) - {NOISE}))

    @property
    def noise_share(self) -> float:
        return float((self.labels == NOISE).mean()) if len(self.labels) else 0.0


def internal_index(points: np.ndarray, labels: np.ndarray, *, score_rows: int = 3000, seed: int = 0) -> float:
    """The module's index of one labelling: silhouette of the clustered rows × their share; -1 below 2 clusters."""
    clustered = np.flatnonzero(labels != NOISE)
    if len(set(labels[clustered].tolist())) < 2 or len(clustered) < 3:
        return -1.0
    rows = clustered[sample_rows(len(clustered), score_rows, seed)]
    if len(set(labels[rows].tolist())) < 2:
        return -1.0
    return float(silhouette_score(points[rows], labels[rows])) * len(clustered) / len(labels)


def _candidates(method: str, points: np.ndarray, max_clusters: int, seed: int) -> list[dict]:
    n = len(points)
    if method in ("kmeans", "hierarchical"):
        return [{"k": k} for k in range(2, max(2, min(max_clusters, n - 1)) + 1)]
    if method == "hdbscan":
        return [{"min_cluster_size": m} for m in (5, 10, 20, 40, 80) if m < n // 2] or [{"min_cluster_size": 2}]
    # dbscan: eps at quantiles of the distance to the min_samples-th neighbour, on a sample
    min_samples = 5
    fit = points[sample_rows(n, 3000, seed)]
    dist = NearestNeighbors(n_neighbors=min(min_samples, len(fit) - 1) + 1).fit(fit).kneighbors(fit)[0][:, -1]
    return [{"eps": float(e), "min_samples": min_samples} for e in np.unique(np.quantile(dist, [0.5, 0.7, 0.8, 0.9, 0.95]))
            if e > 0]


def _fit(method: str, points: np.ndarray, params: dict, seed: int, fit_rows: int) -> np.ndarray:
    if method == "kmeans":
        from sklearn.cluster import KMeans

        return KMeans(n_clusters=params["k"], n_init=4, random_state=seed).fit_predict(points)
    if method == "dbscan":
        from sklearn.cluster import DBSCAN

        return DBSCAN(eps=params["eps"], min_samples=params["min_samples"]).fit_predict(points)
    if method == "hdbscan":
        from sklearn.cluster import HDBSCAN

        return HDBSCAN(min_cluster_size=params["min_cluster_size"], copy=True).fit_predict(points)
    from sklearn.cluster import AgglomerativeClustering

    # Ward needs the pairwise distances: fit on a sample, give every other row its nearest cluster centre
    rows = sample_rows(len(points), fit_rows, seed)
    fitted = AgglomerativeClustering(n_clusters=params["k"], linkage="ward").fit_predict(points[rows])
    centres = np.stack([points[rows][fitted == c].mean(0) for c in range(params["k"])])
    labels = ((points[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
    labels[rows] = fitted
    return labels


def cluster(points: np.ndarray, method: str, *, max_clusters: int = 20, seed: int = 0, fit_rows: int = 5000,
            score_rows: int = 3000) -> Clustering:
    """Cluster ``points`` ``(N, D)`` with ``method``, trying its candidate settings and keeping the one with the
    best :func:`internal_index` (ties: the first, i.e. the fewest clusters or the smallest radius)."""
    if method not in CLUSTERINGS:
        raise ValueError(f"clustering {method!r} is not one of {CLUSTERINGS}")
    points = np.asarray(points, np.float32)
    if len(points) < 4:
        return Clustering(np.zeros(len(points), np.int64), -1.0, {"too_few_rows": len(points)})
    best, tried = None, []
    for params in _candidates(method, points, max_clusters, seed):
        labels = np.asarray(_fit(method, points, params, seed, fit_rows), np.int64)
        index = internal_index(points, labels, score_rows=score_rows, seed=seed)
        tried.append((params, index))
        if best is None or index > best.index:
            best = Clustering(labels, index, params)
    best.tried = tried
    return best
