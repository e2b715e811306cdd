"""The ``directions`` extractor: failure directions in the VLM's space (Jain et al., ICLR 2023, "Distilling Model
Failures as Directions in Latent Space").

Per class, a linear SVM in the VLM's image-embedding space separates the class's misclassified rows from its
correctly classified ones (embeddings whitened with the rows' mean and standard deviation, then L2-normalised; class
weights balanced; ``C`` from ``CS`` by 2-fold cross-validated balanced accuracy), as the authors' ``SVMFitter``
does. Its decision value ranks how failure-like an image of the class is: the failures a planted cause made lie
far along the direction, natural errors near the boundary. Each row is scored by its own class's SVM,
**cross-fitted** (by the SVM fitted on the other fold), so no row ranks itself. The authors rank images by that
value; to turn it into root causes, the feature of a failure is which side of its class's boundary it falls on
(1: failure-like, 0: not), plus a tenth of the squashed value to keep the order within a side
(:func:`direction_features`). With the label block every extractor gets (:func:`conceptlens.rootcause.with_labels`),
each class's failures then form two tight groups, those along its direction (the cause most of its errors share)
and the rest, which a clustering finds as they are.

The authors' package (``failure-directions`` on PyPI) imports OpenAI's ``clip`` and ``ffcv`` at import time, so it
does not install offline here; this is its method on our tables, with scikit-learn's SVC as theirs uses.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import StratifiedKFold
from sklearn.svm import SVC

DIRECTIONS = "directions"  # the extractor's name
CS = np.logspace(-6, 0, 7)  # the authors' grid
MIN_ROWS = 4  # of each side (correct, misclassified) for a class to get a direction


def preprocess(embeddings: np.ndarray) -> np.ndarray:
    """Whitened with the rows' own mean and standard deviation, then L2-normalised (the authors' SVM input)."""
    x = np.asarray(embeddings, np.float64)
    x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-12)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _fit(x: np.ndarray, wrong: np.ndarray, c: float) -> SVC:
    return SVC(kernel="linear", C=c, class_weight="balanced").fit(x, wrong)


def _choose_c(x: np.ndarray, wrong: np.ndarray, seed: int) -> float:
    """The ``C`` of ``CS`` with the best 2-fold balanced accuracy (ties: the smaller)."""
    folds = list(StratifiedKFold(2, shuffle=True, random_state=seed).split(x, wrong))
    scores = [np.mean([balanced_accuracy_score(wrong[b], _fit(x[a], wrong[a], c).predict(x[b])) for a, b in folds])
              for c in CS]
    return float(CS[int(np.argmax(scores))])


def direction_scores(embeddings: np.ndarray, labels: np.ndarray, wrong: np.ndarray, seed: int = 0) -> np.ndarray:
    """Every row's cross-fitted decision value under its class's failure direction, float32 ``(N, 1)``: higher
    means more failure-like. ``embeddings`` ``(N, E)`` of every row (correct and misclassified), ``labels`` ``(N,)``
    their classes, ``wrong`` ``(N,)`` bool. A class with fewer than :data:`MIN_ROWS` rows on either side gets 0."""
    x, labels, wrong = preprocess(embeddings), np.asarray(labels), np.asarray(wrong, bool)
    out = np.zeros(len(x), np.float64)
    for cls in np.unique(labels):
        rows = np.flatnonzero(labels == cls)
        y = wrong[rows]
        if min(y.sum(), (~y).sum()) < 2 * MIN_ROWS:  # each fold needs MIN_ROWS of each side
            continue
        c = _choose_c(x[rows], y, seed)
        for fit_idx, score_idx in StratifiedKFold(2, shuffle=True, random_state=seed).split(x[rows], y):
            svm = _fit(x[rows[fit_idx]], y[fit_idx], c)
            out[rows[score_idx]] = svm.decision_function(x[rows[score_idx]])
    return out[:, None].astype(np.float32)


def direction_features(embeddings: np.ndarray, labels: np.ndarray, wrong: np.ndarray, seed: int = 0) -> np.ndarray:
    """The ``directions`` extractor's feature of every row, float32 ``(N, 1)``: 1 on the failure side of its class's
    boundary (cross-fitted decision value > 0), 0 otherwise, plus ``0.1 · tanh(value)``."""
    value = direction_scores(embeddings, labels, wrong, seed)
    return ((value > 0) + 0.1 * np.tanh(value)).astype(np.float32)
