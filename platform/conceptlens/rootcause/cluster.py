"""Clustering of (reduced) failure features, each method's hyper-parameters chosen by one internal index.

Methods (METHODS.md §3): ``kmeans``, ``dbscan``, ``hdbscan`` and ``hierarchical`` (Ward linkage). Every
candidate setting is scored by the same index, never by the ground truth (our design):

    index = silhouette of the clustered rows × share of rows clustered

the Euclidean silhouette (on a seeded sample of at most ``score_rows`` rows whose distances are computed once
per clustering call, noise left out) says how well separated the clusters are; the factor keeps a density
method from winning by calling most rows noise. Fewer than two clusters score -1. The same index ranks
pipelines against each other. On features without the label block
(:func:`conceptlens.rootcause.features.with_labels`) it prefers, like DBCV, Calinski-Harabasz and a
per-cluster silhouette measured beside it, a coarse split of the demo's failures by what they look like over
the finer one that separates their causes; with the block it picks the finer one.

``hudd`` is HUDD's own choice instead: Ward linkage on the pairwise distances, cut at the knee of the
within-cluster sum of squares over k = 1..max_clusters (the point farthest below the chord of the normalised
curve); its index is reported, not used to choose.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import pairwise_distances, silhouette_score
from sklearn.neighbors import NearestNeighbors

from conceptlens.rootcause.reduce import sample_rows

CLUSTERINGS = ("kmeans", "dbscan", "hdbscan", "hierarchical", "hudd")
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


class Scorer:
    """:func:`internal_index` of many labellings of the same ``points``: the distances between a seeded sample of
    at most ``score_rows`` rows are computed once, so each candidate's silhouette costs O(score_rows²), not
    O(score_rows² × dimensions)."""

    def __init__(self, points: np.ndarray, score_rows: int = 3000, seed: int = 0):
        self.rows = sample_rows(len(points), score_rows, seed)
        self.distances = pairwise_distances(points[self.rows])

    def __call__(self, labels: np.ndarray) -> float:
        clustered = labels != NOISE
        if len(set(labels[clustered].tolist())) < 2:
            return -1.0
        kept = np.flatnonzero(clustered[self.rows])
        sampled = labels[self.rows][kept]
        if len(set(sampled.tolist())) < 2 or len(kept) < 3:
            return -1.0
        silhouette = silhouette_score(self.distances[np.ix_(kept, kept)], sampled, metric="precomputed")
        return float(silhouette) * clustered.mean()


def internal_index(points: np.ndarray, labels: np.ndarray, *, score_rows: int = 3000, seed: int = 0) -> float:
    """The module's index of one labelling: silhouette of the clustered rows (of a seeded sample of at most
    ``score_rows`` rows) × the share of rows clustered; -1 below 2 clusters."""
    return Scorer(points, score_rows, seed)(np.asarray(labels))


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


def knee_clusters(points: np.ndarray, tree: np.ndarray, max_clusters: int) -> int:
    """HUDD's number of clusters: the knee of the within-cluster sum of squares W(k), k = 1..max_clusters, of
    Ward's ``tree`` (scipy linkage) of ``points``."""
    from scipy.cluster.hierarchy import fcluster

    ks = np.arange(1, max(2, min(max_clusters, len(points) - 1)) + 1)
    sse = []
    for k in ks:
        labels = fcluster(tree, k, "maxclust")
        sse.append(sum(((points[labels == c] - points[labels == c].mean(0)) ** 2).sum() for c in np.unique(labels)))
    sse = np.asarray(sse)
    x = (ks - ks[0]) / max(ks[-1] - ks[0], 1)
    y = (sse - sse.min()) / max(sse.max() - sse.min(), 1e-12)
    return int(max(2, ks[np.argmax((1 - x) - y)]))


def _nearest(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of each row's nearest centre (squared distances expanded: no ``(N, k, D)`` array)."""
    return ((centres ** 2).sum(1)[None] - 2 * points @ centres.T).argmin(1)


def _fit(method: str, points: np.ndarray, params: dict, shared: dict) -> np.ndarray:
    """One candidate's labels. ``shared``: ``seed``; ``distances`` (all rows' pairwise distances, when computed:
    the density methods then skip their own neighbour searches, which are slow in many dimensions); ``ward``
    (Ward's tree on ``ward_rows``, built once per call and cut at each k)."""
    if method == "kmeans":
        from sklearn.cluster import KMeans

        return KMeans(n_clusters=params["k"], n_init=1, random_state=shared["seed"]).fit_predict(points)
    if method in ("dbscan", "hdbscan"):
        from sklearn.cluster import DBSCAN, HDBSCAN

        distances = shared.get("distances")
        x, metric = (points, "euclidean") if distances is None else (distances, "precomputed")
        if method == "dbscan":
            return DBSCAN(eps=params["eps"], min_samples=params["min_samples"], metric=metric).fit_predict(x)
        return HDBSCAN(min_cluster_size=params["min_cluster_size"], metric=metric, copy=True).fit_predict(x)
    from scipy.cluster.hierarchy import fcluster

    # Ward on a sample (it needs the pairwise distances); every other row joins its nearest cluster centre
    rows = shared["ward_rows"]
    fitted = fcluster(shared["ward"], params["k"], "maxclust") - 1
    centres = np.stack([points[rows][fitted == c].mean(0) for c in np.unique(fitted)])
    labels = _nearest(points, centres)
    labels[rows] = fitted
    return labels


def _prepare(method: str, points: np.ndarray, score: "Scorer", seed: int, fit_rows: int) -> dict:
    shared = {"seed": seed}
    if method in ("dbscan", "hdbscan") and len(score.rows) == len(points):
        shared["distances"] = score.distances
    if method in ("hierarchical", "hudd"):
        from scipy.cluster.hierarchy import linkage

        shared["ward_rows"] = sample_rows(len(points), fit_rows, seed)
        shared["ward"] = linkage(points[shared["ward_rows"]], "ward")
    return shared


def cluster(points: np.ndarray, method: str, *, max_clusters: int = 20, seed: int = 0, fit_rows: int = 5000,
            score_rows: int = 3000) -> Clustering:
    """Cluster ``points`` ``(N, D)`` with ``method``, trying its candidate settings and keeping the one with the
    best :func:`internal_index` (ties: the first, i.e. the fewest clusters or the smallest radius)."""
    if method not in CLUSTERINGS:
        raise ValueError(f"clustering {method!r} is not one of {CLUSTERINGS}")
    points = np.asarray(points, np.float32)
    if len(points) < 4:
        return Clustering(np.zeros(len(points), np.int64), -1.0, {"too_few_rows": len(points)})
    score = Scorer(points, score_rows, seed)
    shared = _prepare(method, points, score, seed, fit_rows)
    if method == "hudd":
        k = knee_clusters(points[shared["ward_rows"]], shared["ward"], max_clusters)
        labels = np.asarray(_fit("hierarchical", points, {"k": k}, shared), np.int64)
        index = score(labels)
        return Clustering(labels, index, {"k": k}, [({"k": k}, index)])
    best, tried = None, []
    for params in _candidates(method, points, max_clusters, seed):
        labels = np.asarray(_fit(method, points, params, shared), np.int64)
        index = score(labels)
        tried.append((params, index))
        if best is None or index > best.index:
            best = Clustering(labels, index, params)
    best.tried = tried
    return best
