"""The four LBEE methods (Csurka et al., ECCV-W 2024; METHODS.md §4) as scores of every sentence for one hard
cluster. Higher is a better description of the cluster's failure mode; ``-inf`` is "not a candidate".

Inputs (:class:`Contrast`): cosine similarities of the cluster's hard rows and of the easy rows (correctly
classified, of the cluster's classes, reweighted to the cluster's class mix) to every sentence. Our definitions:

* **TopS**: the mean similarity of the hard cluster to the sentence (its centroid's, up to a norm).
* **SetDiff**: TopS, without the sentences among the ``setdiff_top`` nearest an easy cluster's centroid (what
  describes correct rows as well does not describe a failure).
* **PDiff**: how far apart the hard and easy similarity distributions lie, as the standardised mean difference
  ``(mean_hard − mean_easy) / sqrt((var_hard + var_easy) / 2)`` of the similarity *relative to the sentence's
  object alone* (``sim(x, "a star on grass") − sim(x, "a star")``): what the words add to the object. Raw
  similarities mostly measure the object, the same on both sides.
* **FPDiff**: PDiff of the sentences that pass two filters: the sentence names a term, and a class the cluster holds
  (``class_share`` of its rows), or no class when no class holds ``generic_share``; and every term earns its
  place: for each parent (the sentence with one term left out), the similarity gained over the parent
  separates hard from easy rows with Welch ``t >= min_gain``, and the sentence's PDiff exceeds the parent's
  by ``min_lift`` (the object alone counts 0). A word that adds nothing, or one that rides along with a real
  cause (its direction in a small CLIP correlates with it by chance), is filtered out: the shorter sentence
  says the same.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from conceptlens.language.bank import SentenceBank

METHODS = ("tops", "setdiff", "pdiff", "fpdiff")
CHUNK = 4096  # sentence columns per block in the term-gain test (memory: rows × CHUNK floats)


@dataclass
class Contrast:
    """``hard``: ``float32 (n_h, M)``; ``easy``: ``float32 (n_e, M)``; ``weights``: ``(n_e,)`` summing to 1."""
    hard: np.ndarray
    easy: np.ndarray
    weights: np.ndarray


def easy_weights(hard_labels: np.ndarray, easy_labels: np.ndarray) -> np.ndarray:
    """Weights of the easy rows giving each class the share it has among the hard rows (classes the hard rows
    lack get 0), summing to 1. ValueError when a class of the hard rows has no easy row."""
    share = Counter(np.asarray(hard_labels).tolist())
    counts = Counter(np.asarray(easy_labels).tolist())
    missing = [c for c in share if not counts[c]]
    if missing:
        raise ValueError(f"no correctly classified row of class(es) {missing} to contrast the failures with")
    total = sum(share.values())
    return np.array([share[c] / total / counts[c] if c in share else 0.0 for c in np.asarray(easy_labels).tolist()])


def candidate_objects(hard_labels: Sequence, class_share: float, generic_share: float) -> set:
    """The objects a cluster's sentences may name: classes with ``class_share`` of its rows, and None (the
    generic object) when no class holds ``generic_share``."""
    counts = Counter(hard_labels)
    n = sum(counts.values())
    out = {c for c, k in counts.items() if k / n >= class_share}
    if max(counts.values()) / n < generic_share:
        out.add(None)
    return out


def _weighted(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = w @ x
    return mean, w @ (x - mean) ** 2


def tops(c: Contrast) -> np.ndarray:
    return c.hard.mean(0)


def setdiff(c: Contrast, near_easy: np.ndarray) -> np.ndarray:
    """``near_easy``: ``bool (M,)``, the sentences among the top of some easy cluster."""
    return np.where(near_easy, -np.inf, tops(c))


def pdiff(c: Contrast, bank: SentenceBank) -> np.ndarray:
    hard, easy = c.hard - c.hard[:, bank.base], c.easy - c.easy[:, bank.base]
    mean_e, var_e = _weighted(easy, c.weights)
    spread = np.sqrt((hard.var(0) + var_e) / 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        d = (hard.mean(0) - mean_e) / spread
    return np.where(spread > 0, d, 0.0)


def term_gains(c: Contrast, bank: SentenceBank) -> np.ndarray:
    """For each sentence, the smallest Welch t (hard vs easy rows) of its similarity gain over a parent;
    ``+inf`` for the object-alone sentences (no parent)."""
    pairs = np.array([(s, p) for s, ps in enumerate(bank.parents) for p in ps], np.int64).reshape(-1, 2)
    out = np.full(len(bank), np.inf)
    # the variance of a weighted mean: sum(w^2) x the (reliability-weights unbiased) variance var_w / (1 - sum(w^2))
    n_h, w2 = len(c.hard), float((c.weights ** 2).sum())
    easy_factor = w2 / (1 - w2) if w2 < 1 else np.inf
    for i in range(0, len(pairs), CHUNK):
        s, p = pairs[i:i + CHUNK, 0], pairs[i:i + CHUNK, 1]
        gain_h, gain_e = c.hard[:, s] - c.hard[:, p], c.easy[:, s] - c.easy[:, p]
        mean_e, var_e = _weighted(gain_e, c.weights)
        se = np.sqrt(gain_h.var(0, ddof=1) / n_h + var_e * easy_factor) if n_h > 1 else np.full(len(s), np.inf)
        with np.errstate(invalid="ignore", divide="ignore"):
            t = np.where(se > 0, (gain_h.mean(0) - mean_e) / se, 0.0)
        np.minimum.at(out, s, t)
    return out


def lifts(d: np.ndarray, bank: SentenceBank) -> np.ndarray:
    """Each sentence's PDiff ``d`` minus its best parent's (the object alone, with no parent, counts 0)."""
    best = np.array([max((d[p] if bank.terms[p] else 0.0 for p in ps), default=-np.inf) for ps in bank.parents])
    return d - best


def fpdiff(c: Contrast, bank: SentenceBank, allowed: set, min_gain: float, min_lift: float,
           pdiff_scores: Optional[np.ndarray] = None) -> np.ndarray:
    names_ok = np.array([o in allowed for o in bank.objects])
    d = pdiff(c, bank) if pdiff_scores is None else pdiff_scores
    has_terms = np.array([bool(t) for t in bank.terms])  # the object alone names no failure mode
    keep = names_ok & has_terms & (term_gains(c, bank) >= min_gain) & (lifts(d, bank) >= min_lift)
    return np.where(keep, d, -np.inf)


def score_all(c: Contrast, bank: SentenceBank, *, allowed: set, near_easy: np.ndarray, min_gain: float,
              min_lift: float) -> dict[str, np.ndarray]:
    """Every method's scores ``float64 (M,)`` for one cluster."""
    d = pdiff(c, bank)
    return {"tops": tops(c), "setdiff": setdiff(c, near_easy), "pdiff": d,
            "fpdiff": fpdiff(c, bank, allowed, min_gain, min_lift, d)}


def ranked(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` best finite scores, best first (ties by index)."""
    finite = np.flatnonzero(np.isfinite(scores))
    order = finite[np.lexsort((finite, -scores[finite]))]
    return order[:k]


def near_easy_clusters(easy: np.ndarray, sentences: np.ndarray, k: int, top: int, seed: int = 0) -> np.ndarray:
    """``bool (M,)``: the sentences among the ``top`` most similar to the centroid of one of ``k`` k-means clusters
    of the easy rows' unit embeddings ``(n_e, E)``; ``sentences``: ``(M, E)``, unit."""
    from sklearn.cluster import KMeans

    centroids = KMeans(min(k, len(easy)), n_init=2, random_state=seed).fit(easy).cluster_centers_
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    out = np.zeros(len(sentences), bool)
    for row in centroids @ sentences.T:
        out[np.argsort(-row, kind="stable")[:top]] = True
    return out
