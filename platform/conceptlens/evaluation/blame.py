"""How right the blamed concepts are: ``analyze``'s ``risk_ratio`` heatmap against the ground-truth one.

A *cell* is a (class, concept) pair. The analysis *calls* a cell when its risk ratio is significant
(BH q < alpha); a cell is *truly significant* when the ground-truth heatmap's is. Precision and
recall compare the two sets of cells; direction agreement asks whether a correctly called cell
points the right way (log ratio of the same sign: "present in failures" or "missing in failures").
A class's *top blamed concept* is its called cell with the largest |log ratio| (the order of
``responsible_concepts``); it is a *true cause* when that cell is truly significant with the same sign.

A two-valued group (size, lighting, occlusion) is one finding, not two: "small present" and "large absent" are
the same rows. Its two columns are folded into the first value's (:func:`fold_two_valued`) before anything is
counted, so a class blamed for both counts once in precision, recall and the ranks.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy import stats

from conceptlens.evaluation.ground_truth import Slice
from conceptlens.models import two_valued

MISSING_IN_FAILURES = ("spurious_correlation",)  # kinds whose slice is the rows *without* the attribute value


def cells(table: pa.Table, classes: list[str], concepts: list[str], column: str) -> np.ndarray:
    """One column of a long ``class, concept, ...`` table as a ``(K, C)`` float array, NaN where a cell is
    missing (for ``analyze``'s tables pass the ``risk_ratio`` rows)."""
    out = np.full((len(classes), len(concepts)), np.nan)
    row, col = {c: i for i, c in enumerate(classes)}, {c: j for j, c in enumerate(concepts)}
    for cls, concept, value in zip(table["class"].to_pylist(), table["concept"].to_pylist(),
                                   table[column].to_pylist()):
        if cls in row and concept in col and value is not None:
            out[row[cls], col[concept]] = float(value)
    return out


def risk_ratio_rows(heatmaps: pa.Table) -> pa.Table:
    """The ``risk_ratio`` rows of ``analyze``'s long heatmap table."""
    return heatmaps.filter(pc.equal(heatmaps["kind"], "risk_ratio"))


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def agreement(called: np.ndarray, value: np.ndarray, true: np.ndarray, true_value: np.ndarray,
              true_p: np.ndarray | None = None) -> dict:
    """Precision, recall and direction agreement of the ``called`` cells against the ``true`` ones, and, given
    the truth's unadjusted p-values ``true_p``, the *unsupported* called cells: those without even unadjusted
    evidence (p < 0.05, same sign) in the truth. A false cell that is supported is a real but weak effect the
    truth's multiple-testing correction did not call; an unsupported one is a ghost.

    All arguments ``(K, C)``: ``called``, ``true`` bool; ``value``, ``true_value`` log ratios."""
    hits = called & true
    same_way = hits & (np.sign(value) == np.sign(true_value))
    supported = (np.nan_to_num(true_p, nan=1.0) < 0.05) & (np.sign(value) == np.sign(true_value)) \
        if true_p is not None else np.ones_like(called)
    return {"called": int(called.sum()), "truly_significant": int(true.sum()), "hits": int(hits.sum()),
            "hits_same_direction": int(same_way.sum()), "unsupported": int((called & ~supported).sum()),
            "precision": _share(int(hits.sum()), int(called.sum())),
            "recall": _share(int(hits.sum()), int(true.sum())),
            "direction_agreement": _share(int(same_way.sum()), int(hits.sum()))}


def blamed(called: np.ndarray, value: np.ndarray, concepts: list[str]) -> list[tuple[str, float]]:
    """One class's blamed concepts, ``(concept, log ratio)``, the largest |log ratio| first.
    ``called``, ``value``: ``(C,)``."""
    order = np.argsort(-np.abs(np.nan_to_num(value)), kind="stable")
    return [(concepts[j], float(value[j])) for j in order if called[j]]


def top_causes(called: np.ndarray, value: np.ndarray, true: np.ndarray, true_value: np.ndarray,
               classes: list[str], concepts: list[str]) -> dict:
    """Per class its top blamed concept, whether it is a true cause, and the true causes (largest |log ratio|
    first); ``share`` = classes whose top blamed concept is a true cause / classes that have a true cause
    (``classes_with_true_cause``)."""
    per_class, good, with_cause = {}, 0, 0
    for k, cls in enumerate(classes):
        found = blamed(called[k], value[k], concepts)
        j = concepts.index(found[0][0]) if found else None
        is_cause = j is not None and bool(true[k, j]) and bool(np.sign(value[k, j]) == np.sign(true_value[k, j]))
        has_cause = bool(true[k].any())
        with_cause += int(has_cause)
        good += int(has_cause and is_cause)
        per_class[cls] = {"top": found[0][0] if found else None, "true_cause": is_cause,
                          "true_causes": [c for c, _ in blamed(true[k], true_value[k], concepts)]}
    return {"classes_with_true_cause": with_cause, "top_is_true_cause": good, "share": _share(good, with_cause),
            "per_class": per_class}


def rank_correlation(value: np.ndarray, true_value: np.ndarray) -> float | None:
    """Spearman's rank correlation of two ``(K, C)`` log-ratio maps over the cells where both are finite."""
    ok = np.isfinite(value) & np.isfinite(true_value)
    if ok.sum() < 3:
        return None
    return float(stats.spearmanr(value[ok], true_value[ok]).statistic)


def acts_on(scenario: Slice, cls: str) -> bool:
    """Whether the scenario plants failures in class ``cls``: its own classes, and for a spurious correlation
    with ``both_sides`` every other class too (the shortcut's other side)."""
    return cls in scenario.classes or (scenario.kind in MISSING_IN_FAILURES and scenario.both_sides)


def names_cause(concept: str, log_ratio: float, scenario: Slice, cls: str | None = None) -> bool:
    """Whether a blamed cell of class ``cls`` (default: one of the scenario's classes) names the scenario's cause,
    the right way round: its attribute value missing in failures for a spurious correlation's own classes,
    present otherwise (other classes fail *with* the shortcut's value); for a two-valued group the other value
    the other way (``lighting=bright`` missing in failures names ``lighting=dark`` present)."""
    own = cls is None or cls in scenario.classes
    sign = -1 if scenario.kind in MISSING_IN_FAILURES and own else 1
    if concept == scenario.attribute:
        return np.sign(log_ratio) == sign
    return concept == scenario.partner and np.sign(log_ratio) == -sign


def cause_rank(found: list[tuple[str, float]], scenario: Slice, others: list[Slice] = (),
               cls: str | None = None) -> dict:
    """Where the scenario's cause sits among class ``cls``'s blamed concepts (``found``, in rank order):
    ``rank`` (1 = first; None when not blamed), the ``concept`` that names it and its ``risk_ratio``. Concepts
    naming the cause of another planted scenario acting on the class (``others``) do not count against it:
    two planted causes of one class can only be first together."""
    rank = 0
    for concept, log_ratio in found:
        if names_cause(concept, log_ratio, scenario, cls):
            return {"rank": rank + 1, "concept": concept, "risk_ratio": float(np.exp(log_ratio)), "blamed": len(found)}
        rank += not any(names_cause(concept, log_ratio, o, cls) for o in others)
    return {"rank": None, "concept": None, "risk_ratio": None, "blamed": len(found)}


def fold_two_valued(concepts: list[str], pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[list[str], list]:
    """Each two-valued group's second value folded into its first: per ``(flag, log_ratio)`` pair of ``(K, C)``
    arrays, the first value's cell is flagged when either is, its log ratio the first value's where that one is
    flagged, else the second's with the sign turned (large absent = small present). Returns the kept concept
    names and the folded pairs, the second values' columns dropped."""
    drop = two_valued(concepts)
    out = []
    for flag, value in pairs:
        flag, value = flag.copy(), value.copy()
        for j, first in drop.items():
            take = ~flag[:, first] & flag[:, j]
            value[take, first] = -value[take, j]
            flag[:, first] |= flag[:, j]
        keep = [j for j in range(len(concepts)) if j not in drop]
        out.append((flag[:, keep], value[:, keep]))
    return [c for j, c in enumerate(concepts) if j not in drop], out


def semantic_scores(analysis: pa.Table, truth: pa.Table, classes: list[str], concepts: list[str],
                    scenarios: list[Slice]) -> dict:
    """The semantic section for one source.

    ``analysis``: ``analyze``'s ``risk_ratio`` rows (``class, concept, value, significant, reliable``);
    ``truth``: :func:`~conceptlens.evaluation.ground_truth.truth_heatmap`; ``scenarios``: the planted ones.
    Precision, recall, direction agreement and top causes are given over all called cells (``all``) and
    over those the trust check backs (``reliable``); ``planted`` ranks each scenario's cause per class."""
    value = cells(analysis, classes, concepts, "value")
    significant = np.nan_to_num(cells(analysis, classes, concepts, "significant")) > 0
    reliable = (np.nan_to_num(cells(analysis, classes, concepts, "reliable"), nan=1.0) > 0
                if "reliable" in analysis.column_names else np.ones_like(significant))  # runs before the trust check
    true_value = cells(truth, classes, concepts, "value")
    true = np.nan_to_num(cells(truth, classes, concepts, "significant")) > 0
    true_p = cells(truth, classes, concepts, "p")
    out = {"rank_correlation": rank_correlation(value, true_value)}
    names, ((true, true_value), (_, true_p), *scopes) = fold_two_valued(
        concepts, [(true, true_value), (np.zeros_like(true), true_p), (significant, value),
                   (significant & reliable, value)])
    scopes = dict(zip(("all", "reliable"), scopes))
    for scope, (called, found) in scopes.items():
        out[scope] = agreement(called, found, true, true_value, true_p) | {
            "top_cause": top_causes(called, found, true, true_value, classes, names)}
    out["planted"] = {}
    for s in scenarios:
        out["planted"][s.name] = {}
        for cls in (c for c in s.classes if c in classes):
            k, others = classes.index(cls), [o for o in scenarios if o is not s and acts_on(o, cls)]
            rank = {scope: cause_rank(blamed(called[k], found[k], names), s, others, cls)
                    for scope, (called, found) in scopes.items()}
            out["planted"][s.name][cls] = rank["all"] | {"rank_reliable": rank["reliable"]["rank"]}
    return out


def blame_agreement(analysis: pa.Table, truth: pa.Table) -> dict[str, float]:
    """Per concept the truth has, the share of classes where the analysis's presented call (``analysis``: risk-ratio
    rows with ``significant`` and ``reliable``) says what the truth's does: blamed the same way, or not blamed where
    the truth finds nothing. How right the blame of each concept is, to set beside how well the observer sees it."""
    classes = list(dict.fromkeys(truth["class"].to_pylist()))
    concepts = list(dict.fromkeys(truth["concept"].to_pylist()))
    value, true_value = cells(analysis, classes, concepts, "value"), cells(truth, classes, concepts, "value")
    called = np.nan_to_num(cells(analysis, classes, concepts, "significant")) > 0
    if "reliable" in analysis.column_names:
        called &= np.nan_to_num(cells(analysis, classes, concepts, "reliable"), nan=1.0) > 0
    true = np.nan_to_num(cells(truth, classes, concepts, "significant")) > 0
    right = np.where(true, called & (np.sign(value) == np.sign(true_value)), ~called)
    return {c: float(right[:, j].mean()) for j, c in enumerate(concepts)}
