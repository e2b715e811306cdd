"""Neurons in words: the concepts a neuron's activation follows, class held fixed.

A pooled neuron mostly tells the classes apart, so its plain correlation with any concept is dominated by
which classes carry that concept. Within each class the question is sharper: among stars, does the neuron
fire more on water? Activations and the VLM's concept scores are therefore centred per class (the
partial correlation given the label) before they are correlated. Concept scores are the VLM's cosine
similarities, turned into a softmax over the values of each attribute group (``size=small`` /
``size=large``, ...), which reads attributes more reliably than raw cosines.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from conceptlens.models import concept_groups
from conceptlens.pipeline.stats import bh_qvalues


def group_softmax(scores: np.ndarray, names: list[str], scale: float) -> np.ndarray:
    """``scores`` float (N, C) cosines with each group of ``group=value`` concepts replaced by the softmax of
    ``scale`` × its values' cosines; free-standing concepts keep their cosine."""
    out = np.array(scores, np.float64)
    for group in concept_groups(names):
        z = out[:, group] * scale
        z = np.exp(z - z.max(1, keepdims=True))
        out[:, group] = z / z.sum(1, keepdims=True)
    return out


def centred_by_class(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``values`` float (N, k) minus the mean of each row's class."""
    out = np.array(values, np.float64)
    for c in np.unique(labels):
        mine = labels == c
        out[mine] -= out[mine].mean(0)
    return out


@dataclass
class NeuronConcepts:
    """Per neuron (rows) and concept (columns), float (n, C): ``r`` the partial correlation given the class,
    its 95 % interval ``low``/``high`` (Fisher z), ``p`` two-sided and ``q`` (Benjamini-Hochberg over every
    neuron and concept); ``rows`` and ``classes`` behind them."""
    r: np.ndarray
    low: np.ndarray
    high: np.ndarray
    p: np.ndarray
    q: np.ndarray
    rows: int
    classes: int

    def top(self, i: int, names: list[str], k: int, alpha: float) -> list[dict]:
        """Neuron ``i``'s ``k`` concepts with the highest positive ``r`` among those with ``q <= alpha``: what it
        fires for."""
        order = [j for j in np.argsort(-self.r[i], kind="stable") if self.r[i, j] > 0 and self.q[i, j] <= alpha]
        return [{"concept": names[j], "r": float(self.r[i, j]), "low": float(self.low[i, j]),
                 "high": float(self.high[i, j]), "q": float(self.q[i, j])} for j in order[:k]]


def correlate(activations: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> NeuronConcepts:
    """Partial correlations of ``activations`` float (N, n) with concept ``scores`` float (N, C) given the class
    ``labels`` (N,), with intervals and BH-corrected p-values."""
    labels = np.asarray(labels)
    a, s = centred_by_class(activations, labels), centred_by_class(scores, labels)
    a /= np.maximum(np.linalg.norm(a, axis=0, keepdims=True), 1e-12)
    s /= np.maximum(np.linalg.norm(s, axis=0, keepdims=True), 1e-12)
    r = np.clip(a.T @ s, -1 + 1e-9, 1 - 1e-9)
    n, k = len(labels), len(np.unique(labels))
    df = max(n - k - 1, 1)  # the class means cost k degrees of freedom
    p = 2 * stats.t.sf(np.abs(r) * np.sqrt(df / (1 - r ** 2)), df)
    half = 1.96 / np.sqrt(max(df - 1, 1))
    z = np.arctanh(r)
    return NeuronConcepts(r, np.tanh(z - half), np.tanh(z + half), p, bh_qvalues(p), n, k)
