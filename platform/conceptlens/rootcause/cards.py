"""A card per root-cause cluster: how big it is, which mistakes it holds, which images show it best, and the
concepts that set it apart from the images of the same classes the model gets right.

Distinguishing concepts: for each cluster and concept, the share of the cluster's rows where the VLM sees the
concept (presence as in `analyze`: the top value of an exclusive group, a free concept above its z threshold)
against the share among the correctly classified rows whose label is one of the cluster's labels; Fisher's exact
test on the 2×2 table, Benjamini–Hochberg over every (cluster, concept) test of the run, the same care as the
blamed concepts of `analyze`. A concept is named when its q-value is below ``alpha``, largest log ratio first.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from conceptlens.pipeline.stats import bh_qvalues
from conceptlens.rootcause.cluster import NOISE


@dataclass
class Card:
    cluster: int
    size: int
    share: float  # of all failures
    pairs: list[dict]  # {"true", "predicted", "rows"}, most rows first
    exemplars: list[int]  # row positions nearest the cluster's centre, nearest first
    concepts: list[dict] = field(default_factory=list)  # {"concept", "cluster_share", "correct_share", "ratio", "q"}

    def as_dict(self) -> dict:
        return self.__dict__.copy()

    @classmethod
    def from_dict(cls, card: dict) -> "Card":
        """A card from ``cards.json`` (extra keys, such as ``exemplar_ids``, ignored)."""
        return cls(**{name: card[name] for name in cls.__dataclass_fields__})


def exemplar_rows(points: np.ndarray, members: np.ndarray, count: int) -> list[int]:
    """The ``count`` members nearest the members' centroid in ``points`` (the clustered space)."""
    centre = points[members].mean(0)
    order = np.argsort(((points[members] - centre) ** 2).sum(1), kind="stable")
    return [int(i) for i in members[order[:count]]]


def build_cards(labels: np.ndarray, points: np.ndarray, true: np.ndarray, predicted: np.ndarray,
                classes: list[str], *, exemplars: int = 16) -> list[Card]:
    """One card per cluster (noise left out), largest first, without concepts (:func:`add_concepts`)."""
    cards = []
    for c in sorted(set(labels.tolist()) - {NOISE}):
        members = np.flatnonzero(labels == c)
        pairs = Counter(zip(true[members].tolist(), predicted[members].tolist()))
        cards.append(Card(int(c), len(members), len(members) / len(labels),
                          [{"true": classes[t], "predicted": classes[p], "rows": n} for (t, p), n in pairs.most_common()],
                          exemplar_rows(points, members, exemplars)))
    return sorted(cards, key=lambda card: -card.size)


def add_concepts(cards: list[Card], labels: np.ndarray, failure_present: np.ndarray, failure_true: np.ndarray,
                 correct_present: np.ndarray, correct_true: np.ndarray, concepts: list[str], *,
                 alpha: float = 0.05, top: int = 5) -> None:
    """Fill each card's ``concepts`` (module docstring). ``*_present``: ``bool (N, C)`` concept presence of the
    failures (rows as ``labels``) and of the correctly classified rows; ``*_true``: their labels."""
    tests = []  # (card, concept, cluster share, correct share, log ratio, p)
    for card in cards:
        members = labels == card.cluster
        reference = np.isin(correct_true, np.unique(failure_true[members]))
        n_in, n_ref = int(members.sum()), int(reference.sum())
        if n_ref == 0:
            continue
        inside, outside = failure_present[members].sum(0), correct_present[reference].sum(0)
        for j in range(len(concepts)):
            a, b = int(inside[j]), int(outside[j])
            p = stats.fisher_exact([[a, n_in - a], [b, n_ref - b]])[1]
            ratio = np.log((a + 0.5) / (n_in + 1)) - np.log((b + 0.5) / (n_ref + 1))
            tests.append((card, concepts[j], a / n_in, b / n_ref, float(ratio), p))
    q = bh_qvalues(np.array([t[-1] for t in tests])) if tests else []
    for (card, concept, share_in, share_ref, ratio, _), q_value in zip(tests, q):
        if q_value < alpha:
            card.concepts.append({"concept": concept, "cluster_share": share_in, "correct_share": share_ref,
                                  "ratio": float(np.exp(ratio)), "q": float(q_value)})
    for card in cards:
        card.concepts = sorted(card.concepts, key=lambda r: -abs(np.log(r["ratio"])))[:top]


def describe(card: Card, pairs: int = 2, concepts: int = 3) -> str:
    """One line: size, main mistakes, the concepts that set it apart."""
    mistakes = ", ".join(f"{p['true']}→{p['predicted']} ({p['rows']})" for p in card.pairs[:pairs])
    named = ", ".join(f"{c['concept']} {c['cluster_share']:.0%} vs {c['correct_share']:.0%}"
                      for c in card.concepts[:concepts]) or "no concept sets it apart"
    return f"cluster {card.cluster}: {card.size} failures ({card.share:.0%}): {mistakes}; {named}"
