"""Runtime-filter detectors: the ``Detector`` contract, the standard baselines and their metrics.

A *batch* is a dict of NumPy arrays, one row per input: ``logits`` float (N, K), ``features``
float (N, D) (the classifier's encoder features), ``prediction`` int (N,) and optionally
``label_index`` int (N,). A detector is fitted on a calibration batch and ``score`` returns
float64 (N,), higher meaning more likely defective (misclassified or adversarial); a filter
flags ``score > threshold_at_fpr(clean_scores, fpr)``. Each score also exists as a pure function.

The max-softmax and energy baselines score with pytorch-ood's ``MaxSoftmax`` and ``EnergyBased`` (float64); the
NumPy functions :func:`msp_score` and :func:`energy_score` give the same numbers (a unit test holds them to it)
and are what the concept filter reads, so that a served filter needs NumPy only.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.linalg import LinAlgError, cho_factor, cho_solve
from sklearn.metrics import average_precision_score, roc_auc_score

__all__ = ["Detector", "MaxSoftmax", "Energy", "Mahalanobis", "RelativeMahalanobis", "KNN", "Stacked", "BASELINES",
           "msp_score", "energy_score", "mahalanobis_score", "knn_score", "threshold_at_fpr", "detection_metrics"]


def _column(batch: dict, key: str) -> np.ndarray:
    if key not in batch:
        raise KeyError(f"the batch has no {key!r} column (it has {sorted(batch)})")
    return np.asarray(batch[key])


def _clean_rows(n: int, defective: np.ndarray | None) -> np.ndarray:
    keep = np.ones(n, bool) if defective is None else ~np.asarray(defective, bool)
    if keep.shape != (n,) or not keep.any():
        raise ValueError(f"need a bool (N={n},) defective mask that leaves at least one clean row")
    return keep


def _logsumexp(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=1)
    return m + np.log(np.exp(x - m[:, None]).sum(axis=1))


def _ood_score(method: str, logits: np.ndarray, **options) -> np.ndarray:
    """pytorch-ood's static ``score`` of detector class ``method`` on float64 ``logits`` (N, K) -> float64 (N,)."""
    try:
        import torch
        from pytorch_ood import detector
    except ImportError as e:  # a dependency of the package: a broken install, say what to add
        raise ImportError("the msp and energy baselines need pytorch-ood: pip install pytorch-ood") from e
    x = torch.from_numpy(np.array(logits, np.float64))  # a copy: torch wants a writable array
    return getattr(detector, method).score(x, **options).numpy()


def msp_score(logits: np.ndarray) -> np.ndarray:
    """Minus the max softmax probability (Hendrycks & Gimpel 2017): (N, K) -> float64 (N,)."""
    x = np.asarray(logits, np.float64)
    return -1.0 / np.exp(x - x.max(axis=1, keepdims=True)).sum(axis=1)


def energy_score(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """The free energy ``-T·logsumexp(logits/T)`` (Liu et al. 2020): (N, K) -> float64 (N,)."""
    return -temperature * _logsumexp(np.asarray(logits, np.float64) / temperature)


def _squared_distances(x: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Squared Mahalanobis distance of each row of ``x`` (N, D) to each of ``means`` (C, D): (N, C)."""
    x = np.asarray(x, np.float64)
    xp = x @ precision
    d2 = (xp * x).sum(1)[:, None] - 2.0 * xp @ means.T + ((means @ precision) * means).sum(1)[None, :]
    return np.maximum(d2, 0.0)  # round-off can take an exact match slightly below zero


def mahalanobis_score(features: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Min over classes of the squared Mahalanobis distance: features (N, D), means (C, D), precision (D, D)."""
    return _squared_distances(features, means, precision).min(axis=1)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_score(features: np.ndarray, bank: np.ndarray, k: int, *, max_block: int = 1 << 22) -> np.ndarray:
    """Distance from each L2-normalised row of ``features`` (N, D) to its k-th nearest row of the
    normalised ``bank`` (M, D) (Sun et al. 2022), float64 (N,). Queries go in chunks so that a
    similarity block holds at most ``max_block`` float32 values; ``k`` is capped at M."""
    q, bank = _unit(features), _unit(bank)
    k = max(1, min(int(k), len(bank)))
    rows = max(1, max_block // max(len(bank), 1))
    out = np.empty(len(q), np.float64)
    for start in range(0, len(q), rows):
        sim = q[start:start + rows] @ bank.T
        kth = -np.partition(-sim, k - 1, axis=1)[:, k - 1]  # k-th largest similarity = k-th nearest
        out[start:start + rows] = np.sqrt(np.maximum(2.0 - 2.0 * kth.astype(np.float64), 0.0))
    return out


class Detector:
    """Base contract: ``fit(batch, defective=None) -> self`` on a calibration batch, then
    ``score(batch) -> float64 (N,)``, higher = more likely defective."""

    name: str = "detector"

    def fit(self, batch: dict, defective: np.ndarray | None = None) -> Detector:
        return self

    def score(self, batch: dict) -> np.ndarray:
        raise NotImplementedError


class MaxSoftmax(Detector):
    """MSP baseline on ``logits`` (pytorch-ood's ``MaxSoftmax``); needs no fitting."""

    name = "msp"

    def score(self, batch: dict) -> np.ndarray:
        return _ood_score("MaxSoftmax", _column(batch, "logits"))


class Energy(Detector):
    """Energy baseline on ``logits`` at temperature ``T`` (pytorch-ood's ``EnergyBased``); needs no fitting."""

    name = "energy"

    def __init__(self, temperature: float = 1.0):
        self.temperature = float(temperature)

    def score(self, batch: dict) -> np.ndarray:
        return _ood_score("EnergyBased", _column(batch, "logits"), t=self.temperature)


def _precision(centred: np.ndarray, ridge: float) -> np.ndarray:
    """The inverse covariance of ``centred`` rows (N, D), with a ridge scaled to the feature variance, which keeps
    rank-deficient features (D > N, dead units) stable."""
    cov = centred.T @ centred / len(centred)
    scale = max(float(np.trace(cov)) / cov.shape[0], 1e-12)
    regular = cov + ridge * scale * np.eye(cov.shape[0])
    try:  # positive definite once ridged: Cholesky is ~20x faster than an eigendecomposition (pinv) at D = 512
        inverse = cho_solve(cho_factor(regular, check_finite=False), np.eye(len(regular)), check_finite=False)
        return (inverse + inverse.T) / 2
    except LinAlgError:  # ridge 0 on rank-deficient features
        return np.linalg.pinv(regular, hermitian=True)


class Mahalanobis(Detector):
    """Class-conditional Gaussians with a tied covariance on ``features`` (Lee et al. 2018, no input
    pre-processing). Fit rows are grouped by ``label_index`` when present, else by ``prediction``;
    rows marked ``defective`` are left out, as the method fits on clean in-distribution data.
    After ``fit``: ``classes`` (C,), ``means`` (C, D), ``precision`` (D, D), all float64."""

    name = "mahalanobis"

    def __init__(self, ridge: float = 1e-6):
        self.ridge = float(ridge)

    def fit(self, batch: dict, defective: np.ndarray | None = None) -> Mahalanobis:
        x = np.asarray(_column(batch, "features"), np.float64)
        keep = _clean_rows(len(x), defective)
        groups = _column(batch, "label_index" if "label_index" in batch else "prediction")[keep]
        x = x[keep]
        self.classes = np.unique(groups)
        self.means = np.stack([x[groups == c].mean(0) for c in self.classes])
        self.precision = _precision(x - self.means[np.searchsorted(self.classes, groups)], self.ridge)
        return self

    def score(self, batch: dict) -> np.ndarray:
        return mahalanobis_score(_column(batch, "features"), self.means, self.precision)


class RelativeMahalanobis(Mahalanobis):
    """Relative Mahalanobis distance (Ren et al. 2021): the class-conditional distance minus the distance under
    one background Gaussian of all clean fit rows, ``min_k MD_k(x) − MD_0(x)``; it discounts directions in which
    every class varies alike. Fitted as :class:`Mahalanobis`."""

    name = "relative_mahalanobis"

    def fit(self, batch: dict, defective: np.ndarray | None = None) -> RelativeMahalanobis:
        super().fit(batch, defective)
        x = np.asarray(_column(batch, "features"), np.float64)[_clean_rows(len(batch["features"]), defective)]
        self.background = x.mean(0, keepdims=True), _precision(x - x.mean(0), self.ridge)
        return self

    def score(self, batch: dict) -> np.ndarray:
        x = _column(batch, "features")
        return (_squared_distances(x, self.means, self.precision).min(axis=1)
                - _squared_distances(x, *self.background)[:, 0])


class KNN(Detector):
    """Deep nearest neighbours (Sun et al. 2022): distance to the k-th nearest clean fit row in
    L2-normalised ``features``; rows marked ``defective`` are left out of the bank."""

    name = "knn"

    def __init__(self, k: int = 50, *, max_block: int = 1 << 22):
        self.k, self.max_block = int(k), int(max_block)

    def fit(self, batch: dict, defective: np.ndarray | None = None) -> KNN:
        x = _column(batch, "features")
        self.bank = _unit(x[_clean_rows(len(x), defective)])
        return self

    def score(self, batch: dict) -> np.ndarray:
        return knn_score(_column(batch, "features"), self.bank, self.k, max_block=self.max_block)


BASELINES: dict[str, type[Detector]] = {"msp": MaxSoftmax, "energy": Energy, "mahalanobis": Mahalanobis,
                                        "relative_mahalanobis": RelativeMahalanobis, "knn": KNN}


class Stacked(Detector):
    """The supervised baseline: a logistic regression over the scores of already fitted ``detectors`` (each score
    standardised), trained on labelled rows, as the concept filter's heads are. ``fit`` needs ``defective``.
    It gives an unsupervised detector what the filter has, labels, so a table can compare like with like."""

    name = "stacked"

    def __init__(self, detectors: dict[str, Detector]):
        self.detectors = dict(detectors)

    def _scores(self, batch: dict) -> np.ndarray:
        return np.stack([d.score(batch) for d in self.detectors.values()], 1)

    def fit(self, batch: dict, defective: np.ndarray | None = None) -> Stacked:
        from sklearn.linear_model import LogisticRegression

        if defective is None or np.all(defective) or not np.any(defective):
            raise ValueError("the stacked baseline needs labelled rows: both defective and good ones")
        s = self._scores(batch)
        self.centre, self.scale = s.mean(0), s.std(0) + 1e-9
        self.model = LogisticRegression(max_iter=2000, class_weight="balanced").fit(
            (s - self.centre) / self.scale, np.asarray(defective, bool))
        return self

    def score(self, batch: dict) -> np.ndarray:
        return self.model.decision_function((self._scores(batch) - self.centre) / self.scale).astype(np.float64)


def threshold_at_fpr(clean_scores: np.ndarray, fpr: float) -> float:
    """The threshold that flags (``score > threshold``) at most ``fpr`` of ``clean_scores`` (N,).
    Ties at the threshold are not flagged; ``fpr >= 1`` gives ``-inf``."""
    s = np.sort(np.asarray(clean_scores, np.float64).ravel())
    if s.size == 0 or not np.isfinite(s).all() or not 0.0 <= fpr <= 1.0:
        raise ValueError("need at least one finite clean score and 0 <= fpr <= 1")
    allowed = int(math.floor(fpr * s.size + 1e-9))  # the epsilon keeps e.g. 0.29 * 100 at 29
    return -math.inf if allowed >= s.size else float(s[s.size - allowed - 1])


def detection_metrics(scores: np.ndarray, defective: np.ndarray, fpr: float = 0.05) -> dict:
    """AUROC, AUPR (defective = positive) and the TPR at a threshold set on this set's clean rows
    at ``fpr``, plus ``n`` and ``n_defective``; metrics are NaN when only one class is present."""
    scores = np.asarray(scores, np.float64).ravel()
    defective = np.asarray(defective, bool).ravel()
    if scores.shape != defective.shape:
        raise ValueError(f"scores {scores.shape} and defective {defective.shape} differ in shape")
    out = {"auroc": math.nan, "aupr": math.nan, "tpr_at_fpr": math.nan,
           "n": int(scores.size), "n_defective": int(defective.sum())}
    if 0 < out["n_defective"] < out["n"]:
        threshold = threshold_at_fpr(scores[~defective], fpr)
        out.update(auroc=float(roc_auc_score(defective, scores)),
                   aupr=float(average_precision_score(defective, scores)),
                   tpr_at_fpr=float((scores[defective] > threshold).mean()))
    return out
