"""Semantic heatmaps (classes × concepts), streamed over batches of concept scores.

Scores are standardised per concept (z-scores over the analysed rows). Kinds (METHODS.md §1):

* ``ground_truth`` / ``output``: mean z-score of the rows of each true / predicted class;
* ``correct`` / ``incorrect``: the same over each true class's correct / misclassified rows;
* ``differential``: correct − incorrect, Welch-tested per cell, Benjamini–Hochberg across cells;
* ``binarized``: share of each true class's rows where the concept is present, and
  ``binarized_differential`` (present among correct − among incorrect). A concept of a mutually
  exclusive group (``group=value`` names, :func:`conceptlens.models.concept_groups`) is present
  where it scores highest among its group's values: the VLM's own zero-shot choice, one value per
  image, as the world has it. A free-standing concept is present where its z-score exceeds a
  threshold;
* ``risk_ratio``: log of how much more often a class fails with the concept present than absent,
  Fisher-tested per cell, Benjamini–Hochberg across cells: the ranking of responsible concepts.

With concept probes (:mod:`conceptlens.semantic.probes`) a probed free-standing concept is present above its
probe threshold instead, and its risk ratios are corrected for the detector's measured error rates.

Mean cells carry 95 % normal intervals, frequencies Wilson intervals. Everything is computed
from per-cell counts, sums and sums of squares, so memory does not grow with the rows:
:class:`HeatmapAccumulator` takes one batch at a time (pass 1: moments; pass 2: presence).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy import stats

from conceptlens.models import concept_groups, two_valued
from conceptlens.pipeline.stats import bh_qvalues, wilson
from conceptlens.semantic.probes import corrected_share

Z95 = 1.959964
MEAN_GROUPS = ("ground_truth", "output", "correct", "incorrect")


class Moments:
    """Per-(group, concept) count, sum and sum of squares of scores."""

    def __init__(self, groups: int, concepts: int):
        self.n = np.zeros(groups)
        self.s = np.zeros((groups, concepts))
        self.ss = np.zeros((groups, concepts))

    def update(self, keys: np.ndarray, values: np.ndarray) -> None:
        np.add.at(self.n, keys, 1)
        np.add.at(self.s, keys, values)
        np.add.at(self.ss, keys, values * values)

    def mean(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.s / self.n[:, None]

    def var(self) -> np.ndarray:
        """Unbiased variance (NaN below 2 rows)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            n = self.n[:, None]
            return np.maximum(self.ss - self.s ** 2 / n, 0) / (n - 1)


def presence(scores: np.ndarray, mean: np.ndarray, std: np.ndarray, groups: list[list[int]],
             threshold: float, raw_thresholds: np.ndarray | None = None) -> np.ndarray:
    """Which concepts each row shows, ``bool (N, C)`` from raw scores ``(N, C)``: the top-scoring value of each
    exclusive group (raw cosine, not z-scores: a z-score would rank a value by how unusual it is in these
    rows rather than by how well it describes the image); free-standing concepts whose z-score (``mean``,
    ``std`` per concept) exceeds ``threshold``, or, where ``raw_thresholds`` (C,) is finite (a probe
    calibration), whose raw score exceeds it."""
    scores = np.asarray(scores, np.float64)
    present = (scores - mean) / std > threshold
    if raw_thresholds is not None:
        calibrated = np.isfinite(raw_thresholds)
        present[:, calibrated] = scores[:, calibrated] > raw_thresholds[calibrated]
    rows = np.arange(len(scores))
    for members in groups:
        present[:, members] = False
        present[rows, np.asarray(members)[scores[:, members].argmax(1)]] = True
    return present


class HeatmapAccumulator:
    """Streams one source's concept scores ``(N, C)`` with labels and predictions into heatmaps.

    Pass 1: ``update(scores, labels, predictions)`` for every batch. Then ``freeze()`` fixes the
    per-concept mean and std. Pass 2: ``update_presence(...)`` for every batch. Then ``tables()``.
    ``presence_threshold``: the z-score above which a free-standing concept counts as present; ``calibration``
    (:class:`~conceptlens.semantic.probes.Calibration`, optional): probe thresholds and error rates.
    """

    def __init__(self, classes: list[str], concepts: list[str], presence_threshold: float = 1.0,
                 calibration=None):
        self.classes, self.concepts, self.threshold = list(classes), list(concepts), presence_threshold
        self.calibration = calibration
        self.groups = concept_groups(self.concepts)
        k, c = len(classes), len(concepts)
        self.all = Moments(1, c)
        self.moments = {g: Moments(k, c) for g in MEAN_GROUPS}
        self.present = {g: np.zeros((k, c)) for g in ("ground_truth", "correct", "incorrect")}
        self.mu = self.sigma = None

    def update(self, scores: np.ndarray, labels: np.ndarray, predictions: np.ndarray) -> None:
        scores = np.asarray(scores, np.float64)
        correct = labels == predictions
        self.all.update(np.zeros(len(scores), int), scores)
        self.moments["ground_truth"].update(labels, scores)
        self.moments["output"].update(predictions, scores)
        self.moments["correct"].update(labels[correct], scores[correct])
        self.moments["incorrect"].update(labels[~correct], scores[~correct])

    def freeze(self) -> None:
        if self.all.n[0] < 2:
            raise ValueError(f"heatmaps need at least 2 scored rows, got {int(self.all.n[0])}")
        self.mu, self.sigma = self.all.mean()[0], np.sqrt(self.all.var()[0]) + 1e-12

    def standardize(self, scores: np.ndarray) -> np.ndarray:
        """z-scores of raw scores ``(N, C)`` with the frozen per-concept mean and std."""
        return (np.asarray(scores, np.float64) - self.mu) / self.sigma

    def presence(self, scores: np.ndarray) -> np.ndarray:
        """:func:`presence` with the frozen statistics."""
        raw = self.calibration.threshold if self.calibration is not None else None
        return presence(scores, self.mu, self.sigma, self.groups, self.threshold, raw)

    def update_presence(self, scores: np.ndarray, labels: np.ndarray, predictions: np.ndarray) -> None:
        present = self.presence(scores).astype(np.float64)
        correct = labels == predictions
        np.add.at(self.present["ground_truth"], labels, present)
        np.add.at(self.present["correct"], labels[correct], present[correct])
        np.add.at(self.present["incorrect"], labels[~correct], present[~correct])

    def mean_cells(self, group: str) -> dict[str, np.ndarray]:
        """``n``, ``value`` (mean z-score), ``low``, ``high`` (95 %) and ``var`` of the z-scores, each ``(K, C)``."""
        m = self.moments[group]
        n = np.broadcast_to(m.n[:, None], m.s.shape)
        value = (m.mean() - self.mu) / self.sigma
        var = m.var() / self.sigma ** 2
        with np.errstate(invalid="ignore", divide="ignore"):
            half = Z95 * np.sqrt(var / n)
        return {"n": n, "value": value, "low": value - half, "high": value + half, "var": var}

    def frequency_cells(self, group: str) -> dict[str, np.ndarray]:
        """Presence frequency with Wilson 95 % intervals, each ``(K, C)``."""
        n = np.broadcast_to(self.moments[group].n[:, None], self.present[group].shape)
        low, high = wilson(self.present[group], n)
        with np.errstate(invalid="ignore", divide="ignore"):
            value = self.present[group] / n
        return {"n": n, "value": value, "low": low, "high": high}

    def differential(self) -> dict[str, np.ndarray]:
        """Correct − incorrect mean z-score per (class, concept) with Welch's t-test p-values."""
        good, bad = self.mean_cells("correct"), self.mean_cells("incorrect")
        diff = good["value"] - bad["value"]
        a, b = good["var"] / good["n"], bad["var"] / bad["n"]
        with np.errstate(invalid="ignore", divide="ignore"):
            se = np.sqrt(a + b)
            t = diff / se
            dof = (a + b) ** 2 / (a ** 2 / (good["n"] - 1) + b ** 2 / (bad["n"] - 1))
        p = 2 * stats.t.sf(np.abs(t), dof)
        testable = (good["n"] >= 2) & (bad["n"] >= 2) & np.isfinite(p)
        p = np.where(testable, p, np.nan)
        return {"n": bad["n"], "value": diff, "low": diff - Z95 * se, "high": diff + Z95 * se, "p": p}

    def risk_ratios(self) -> dict[str, np.ndarray]:
        """Per (class, concept): ``value`` = log of how much more often the class fails when the concept
        is present than when it is absent (binarized presence, +0.5 smoothing), a 95 % interval, and
        Fisher's exact p-value of the 2×2 table (present/absent × correct/incorrect). With a probe calibration,
        the value and interval come from the table corrected for the detector's error rates, the p-value from the
        detected one (:mod:`conceptlens.semantic.probes`)."""
        n_good = self.moments["correct"].n[:, None]
        n_bad = self.moments["incorrect"].n[:, None]
        a, b = self.present["incorrect"], self.present["correct"]  # present: failed, fine
        c, d = n_bad - a, n_good - b  # absent: failed, fine
        ca, cb = a, b
        if self.calibration is not None:
            se, sp = self.calibration.se[None, :], self.calibration.sp[None, :]
            with np.errstate(invalid="ignore", divide="ignore"):
                ca = np.nan_to_num(n_bad * corrected_share(a / n_bad, se, sp))
                cb = np.nan_to_num(n_good * corrected_share(b / n_good, se, sp))
        sa, sb, sc, sd = ca + 0.5, cb + 0.5, n_bad - ca + 0.5, n_good - cb + 0.5
        value = np.log(sa / (sa + sb)) - np.log(sc / (sc + sd))
        half = Z95 * np.sqrt(1 / sa - 1 / (sa + sb) + 1 / sc - 1 / (sc + sd))
        p = np.full(value.shape, np.nan)
        for i, j in zip(*np.nonzero((n_bad > 0) & (n_good > 0) & np.ones_like(value, bool))):
            p[i, j] = stats.fisher_exact([[a[i, j], b[i, j]], [c[i, j], d[i, j]]])[1]
        return {"n": np.broadcast_to(n_bad, value.shape), "value": value, "low": value - half, "high": value + half,
                "p": p}

    def tables(self, alpha: float = 0.05) -> pa.Table:
        """Every heatmap as one long table: ``kind, class, concept, n, value, low, high, p, q, significant``."""
        heatmaps = {g: self.mean_cells(g) for g in MEAN_GROUPS}
        heatmaps["differential"] = self.differential()
        heatmaps["binarized"] = self.frequency_cells("ground_truth")
        good, bad = self.frequency_cells("correct"), self.frequency_cells("incorrect")
        heatmaps["binarized_differential"] = {"n": bad["n"], "value": good["value"] - bad["value"],
                                              "low": good["low"] - bad["high"], "high": good["high"] - bad["low"]}
        heatmaps["risk_ratio"] = self.risk_ratios()
        # a two-valued group's presence is one value or the other: its risk ratios mirror each other, one test
        heatmaps["differential"]["q"] = bh_qvalues(heatmaps["differential"]["p"])
        heatmaps["risk_ratio"]["q"] = bh_qvalues(heatmaps["risk_ratio"]["p"], two_valued(self.concepts))
        for tested in (heatmaps["differential"], heatmaps["risk_ratio"]):
            tested["significant"] = np.nan_to_num(tested["q"], nan=1.0) < alpha
        k, c = len(self.classes), len(self.concepts)
        rows = {name: [] for name in ("kind", "class", "concept", "n", "value", "low", "high", "p", "q", "significant")}
        nan = np.full((k, c), np.nan)
        for kind, cells in heatmaps.items():
            rows["kind"] += [kind] * (k * c)
            rows["class"] += [cls for cls in self.classes for _ in self.concepts]
            rows["concept"] += self.concepts * k
            for name in ("n", "value", "low", "high", "p", "q"):
                rows[name] += np.asarray(cells.get(name, nan), np.float64).ravel().tolist()
            rows["significant"] += np.asarray(cells.get("significant", np.zeros((k, c), bool))).ravel().tolist()
        return pa.table(rows)


@dataclass(frozen=True)
class Responsible:
    """A concept blamed for a class's failures: the class fails ``risk_ratio`` times as often when the
    concept is present as when it is absent (``q``: its BH-adjusted p-value); ``effect`` is the
    differential heatmap's cell (correct − incorrect mean z-score)."""
    concept: str
    risk_ratio: float
    effect: float
    q: float

    @property
    def direction(self) -> str:
        return "present in failures" if self.risk_ratio > 1 else "missing in failures"


def responsible_concepts(heatmaps: pa.Table, top: int = 5) -> dict[str, list[Responsible]]:
    """Per class, the concepts whose presence significantly changes how often it fails (Fisher's exact
    test on the binarized heatmaps, Benjamini–Hochberg), the largest change (either way) first."""
    ratio = heatmaps.filter(pc.equal(heatmaps["kind"], "risk_ratio"))
    classes = list(dict.fromkeys(ratio["class"].to_pylist()))
    concepts = list(dict.fromkeys(ratio["concept"].to_pylist()))
    log_ratio = matrix(heatmaps, "risk_ratio", classes, concepts)
    q = matrix(heatmaps, "risk_ratio", classes, concepts, "q")
    significant = matrix(heatmaps, "risk_ratio", classes, concepts, "significant").astype(bool)
    effect = matrix(heatmaps, "differential", classes, concepts)
    out: dict[str, list[Responsible]] = {}
    for k, cls in enumerate(classes):
        named = [j for j in np.argsort(-np.abs(log_ratio[k])) if significant[k, j]][:top]
        out[cls] = [Responsible(concepts[j], float(np.exp(log_ratio[k, j])), float(effect[k, j]), float(q[k, j]))
                    for j in named]
    return out


def matrix(heatmaps: pa.Table, kind: str, classes: list[str], concepts: list[str], column: str = "value") -> np.ndarray:
    """One heatmap of the long table as a ``(K, C)`` array."""
    rows = heatmaps.filter(pc.equal(heatmaps["kind"], kind))
    return np.asarray(rows.column(column).to_numpy(zero_copy_only=False), np.float64).reshape(len(classes), len(concepts))
