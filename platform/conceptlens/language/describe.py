"""Every hard cluster's sentences by every method, picked on one share of the rows (the rest validate them).

Rows are the held-out rows of a run: their similarities to every sentence, class, whether the classifier got them
wrong, the hard cluster of each wrong row (``-1``: none) and whether the row picks (``pick``) or validates.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from conceptlens.language.bank import SentenceBank
from conceptlens.language.methods import METHODS, Contrast, candidate_objects, easy_weights, ranked, score_all
from conceptlens.language.validate import Retrieval, lbee_metrics, retrieve, validate


def pick_rows(ids: Sequence[str], share: float) -> np.ndarray:
    """``bool (N,)``: the rows that pick sentences, ``sha256(id)`` below ``share`` (stable across runs)."""
    return np.array([int.from_bytes(hashlib.sha256(str(i).encode()).digest()[:8], "big") / 2 ** 64 < share
                     for i in ids], bool)


@dataclass
class Rows:
    """``sims``: ``float32 (N, M)``; ``classes``: (N,) class names; ``wrong``: ``bool (N,)``; ``cluster``:
    ``int (N,)``, -1 outside every hard cluster; ``pick``: ``bool (N,)``."""
    sims: np.ndarray
    classes: np.ndarray
    wrong: np.ndarray
    cluster: np.ndarray
    pick: np.ndarray


@dataclass
class ClusterSentences:
    """One hard cluster's ``ranked`` sentence indices (best first) and their ``scores``, per method; ``rows``:
    its hard rows that picked; ``allowed``: the objects its sentences may name; ``similarity``: ``(M,)`` mean
    similarity of those rows to each sentence; ``contrast_missing``: the cluster's classes without a correctly
    classified picking row, for which it was contrasted with every correct row instead (``explain.easy=all``)."""
    cluster: int
    rows: int
    allowed: set
    similarity: np.ndarray
    contrast_missing: list = field(default_factory=list)
    ranked: dict[str, np.ndarray] = field(default_factory=dict)
    scores: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class Settings:
    """The knobs of ``explain.*`` the methods use (see :class:`conceptlens.config.ExplainConfig`)."""
    class_share: float = 0.2
    generic_share: float = 0.5
    min_gain: float = 3.0
    min_lift: float = 0.1
    min_cluster: int = 5
    depth: int = 10
    easy: str = "classes"


def describe_clusters(rows: Rows, bank: SentenceBank, near_easy: np.ndarray, settings: Settings,
                      progress=None) -> list[ClusterSentences]:
    """Each hard cluster with at least ``min_cluster`` picking rows, its ``depth`` best sentences per method."""
    out = []
    easy_pick = ~rows.wrong & rows.pick
    clusters = sorted(set(rows.cluster[rows.wrong & (rows.cluster >= 0)].tolist()))
    for c in clusters:
        hard = (rows.cluster == c) & rows.pick
        if hard.sum() < settings.min_cluster:
            continue
        hard_classes = rows.classes[hard]
        missing = sorted(set(hard_classes.tolist()) - set(rows.classes[easy_pick].tolist()))
        if settings.easy == "all" or missing:  # every correct row, equally weighted
            easy = easy_pick
            weights = np.full(int(easy.sum()), 1 / max(int(easy.sum()), 1))
        else:  # the correct rows of the cluster's classes, in the cluster's class mix
            easy = easy_pick & np.isin(rows.classes, np.unique(hard_classes))
            weights = easy_weights(hard_classes, rows.classes[easy])
        contrast = Contrast(rows.sims[hard], rows.sims[easy], weights)
        allowed = candidate_objects(hard_classes.tolist(), settings.class_share, settings.generic_share)
        scores = score_all(contrast, bank, allowed=allowed, near_easy=near_easy, min_gain=settings.min_gain,
                           min_lift=settings.min_lift)
        result = ClusterSentences(c, int(hard.sum()), allowed, contrast.hard.mean(0),
                                  missing if settings.easy != "all" else [])
        for method in METHODS:
            result.ranked[method] = ranked(scores[method], settings.depth)
            result.scores[method] = scores[method][result.ranked[method]]
        out.append(result)
        if progress:
            progress(1)
    return out


def universe(bank: SentenceBank, described: list[ClusterSentences]) -> np.ndarray:
    """``bool (M,)``: sentences naming an object some described cluster may name."""
    allowed = set().union(*(d.allowed for d in described)) if described else set()
    return np.array([o in allowed for o in bank.objects], bool)


def method_metrics(described: list[ClusterSentences], reference: np.ndarray, within: np.ndarray,
                   ks: Sequence[int]) -> dict[str, dict[str, dict]]:
    """``{method: {"k=K": AHR/ACR/TPR/JI}}`` of the described clusters against ``S*_β`` (``reference``)."""
    return {m: {f"k{k}": lbee_metrics([d.ranked[m][:k] for d in described], reference, within) for k in ks}
            for m in METHODS}


def validation_rows(rows: Rows, bank: SentenceBank, share: float):
    """Retrieval statistics of every sentence on the validating rows."""
    held = ~rows.pick
    return retrieve(rows.sims[held], rows.wrong[held], rows.classes[held], bank, share)


def validate_sentences(rows: Rows, bank: SentenceBank, retrieval, sentences: np.ndarray, alpha: float
                       ) -> dict[str, np.ndarray]:
    """:func:`~conceptlens.language.validate.validate` of ``sentences`` (indices) on the validating rows."""
    part = Retrieval(*(getattr(retrieval, f)[sentences] for f in ("retrieved", "errors", "rest", "rest_errors")))
    return validate(part, alpha)
