"""Root causes of two runs matched by what they are about: their classes, the concepts that set them apart and
the sentences that describe them.

A cause (:func:`causes`) is one cluster of ``rootcause``'s chosen pipeline (``cards.json``, held-out failures) with
the sentences ``explain`` wrote for it. Two causes are compared by

    similarity = (1 - w) · J(classes ∪ signed concepts) + w · J(sentence words)

with J the Jaccard index, signed concepts ``lighting=dark+`` (over-represented in the cluster) or
``background=water-`` (under-represented), and sentence words without filler (``a photo of``) where a negation
binds to the next word (``not on water`` → ``not-water``); without sentences on either side, the first term alone.
:func:`match` pairs the causes one to one (the assignment of largest total similarity) and keeps the pairs at or
above the threshold: a matched cause *persists*, an unmatched one of run A is *fixed*, of run B *new*.
"""
from __future__ import annotations

import re
from collections import defaultdict

import numpy as np
from scipy.optimize import linear_sum_assignment

FILLER = {"a", "an", "the", "photo", "picture", "image", "of", "on", "in", "at", "with", "and", "is", "it", "its",
          "object", "that", "which", "this"}
NEGATIONS = {"not", "no", "without", "never"}


def sentence_words(sentences: list[str]) -> set[str]:
    """Content words of ``sentences``, a negation bound to the word after it: ``{"small", "star", "not-water"}``."""
    out = set()
    for sentence in sentences:
        negate = False
        for word in re.findall(r"[a-z0-9=_]+", sentence.lower()):
            if word in NEGATIONS:
                negate = True
            elif word not in FILLER:
                out.add(f"not-{word}" if negate else word)
                negate = False
    return out


def jaccard(a: set, b: set) -> float:
    """|a ∩ b| / |a ∪ b|; 0 for two empty sets (nothing in common to speak of)."""
    union = a | b
    return len(a & b) / len(union) if union else 0.0


def causes(cards: list[dict], explained: list[dict] | None = None, class_share: float = 0.2) -> list[dict]:
    """The causes of one run: ``{"id", "failures", "share", "classes", "concepts", "sentences", "pairs"}`` per
    card (``rootcause``'s ``cards.json`` set of held-out failures; noise, cluster -1, is no cause), largest first.
    ``classes``: the true classes holding ``class_share`` or more of the cause's failures; ``concepts``:
    ``{"concept", "ratio"}`` of the card; ``sentences``: those ``explained`` (``explain``'s summary clusters,
    matched by cluster id) gives the same cluster."""
    said = {c["cluster"]: [s["sentence"] for s in c.get("sentences", [])] for c in explained or []}
    out = []
    for card in cards:
        if card["cluster"] < 0:
            continue
        per_class = defaultdict(int)
        for pair in card.get("pairs", []):
            per_class[pair["true"]] += pair["rows"]
        failures = card["size"]  # not a truth column: the number of failures in rootcause's cluster card
        classes = [c for c, n in sorted(per_class.items(), key=lambda kv: -kv[1])
                   if failures and n / failures >= class_share]
        out.append({"id": card["cluster"], "failures": failures, "share": card.get("share"), "classes": classes,
                    "concepts": [{"concept": c["concept"], "ratio": c["ratio"]} for c in card.get("concepts", [])],
                    "sentences": said.get(card["cluster"], []), "pairs": card.get("pairs", [])[:3]})
    return sorted(out, key=lambda c: -c["failures"])


def tokens(cause: dict) -> set[str]:
    """``class:<name>`` for each class and ``<concept>+`` / ``<concept>-`` for each concept of a cause."""
    return {f"class:{c}" for c in cause["classes"]} | {
        f"{c['concept']}{'+' if c['ratio'] > 1 else '-'}" for c in cause["concepts"]}


def similarity(a: dict, b: dict, sentence_weight: float = 0.5) -> float:
    """How alike two causes are, in [0, 1] (the module's formula)."""
    by_concepts = jaccard(tokens(a), tokens(b))
    if not (a["sentences"] and b["sentences"]):
        return by_concepts
    by_words = jaccard(sentence_words(a["sentences"]), sentence_words(b["sentences"]))
    return (1 - sentence_weight) * by_concepts + sentence_weight * by_words


def match(a: list[dict], b: list[dict], threshold: float, sentence_weight: float = 0.5) -> dict:
    """``{"persisting": [(i, j, similarity)], "fixed": [i], "new": [j]}``: indices into ``a`` and ``b``, pairs
    one to one by the assignment of largest total similarity, kept at ``similarity >= threshold``."""
    if not 0 <= threshold <= 1 or not 0 <= sentence_weight <= 1:
        raise ValueError(f"compare.match_threshold={threshold} and compare.sentence_weight={sentence_weight} must lie "
                         f"in [0, 1]")
    pairs = []
    if a and b:
        sim = np.array([[similarity(x, y, sentence_weight) for y in b] for x in a])
        rows, cols = linear_sum_assignment(-sim)
        pairs = [(int(i), int(j), float(sim[i, j])) for i, j in zip(rows, cols) if sim[i, j] >= threshold]
    matched_a, matched_b = {i for i, _, _ in pairs}, {j for _, j, _ in pairs}
    return {"persisting": sorted(pairs), "fixed": [i for i in range(len(a)) if i not in matched_a],
            "new": [j for j in range(len(b)) if j not in matched_b]}
