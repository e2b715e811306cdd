"""Sentences against the planted scenarios (METHODS.md §4, §5): does each planted failure get named first?

For a planted scenario, its *cluster* is the hard cluster holding most of its failures. A sentence *names* the
scenario when it names the cluster's class and the scenario's attribute: for a spurious correlation on the
scenario's own class, the attribute's complement (``background!=water``: "a star not on water", the model
expected water); for the other side of a spurious correlation (another class carrying the value, taken for
the scenario's class) the value itself, with that class or the generic object. Other terms may come along.

Ranks count the validated sentences of a method, in its order (the first is the failure mode shown):

* ``rank``: among those of the scenario's cluster;
* ``rank_class``: among those of every cluster of the same class, by score;
* ``rank_unvalidated``: among all of the cluster's ranked sentences, validated or not (where the method put it).

Distractors: sentences naming a value the world never shows; any shown as a failure mode is a false finding.
"""
from __future__ import annotations

from collections import Counter
from typing import Optional

import numpy as np
import pyarrow as pa


def _names(terms: list, obj: Optional[str], scenario, cluster_class: str) -> bool:
    """Whether a sentence's ``terms`` (``group=value`` / ``group!=value``) name the slice's cause the right way
    round (a free-standing concept, which no bank term names, never matches)."""
    own = cluster_class in scenario.classes
    if own:
        negated = scenario.kind == "spurious_correlation"
        want = scenario.attribute.replace("=", "!=", 1) if negated else scenario.attribute
        return obj == cluster_class and "=" in scenario.attribute and want in terms
    return obj in (cluster_class, None) and scenario.attribute in terms


def _first(rows: list[dict], scenario, cluster_class: str) -> Optional[int]:
    return next((i for i, r in enumerate(rows, 1) if _names(r["terms"], r["object"], scenario, cluster_class)), None)


def explain_section(sentences: pa.Table, hard: pa.Table, scenario_of: dict, planted: list, default: str) -> dict:
    """The scorecard's sentence section: per planted scenario and method the ranks above; shown and validated
    distractors per method."""
    rows = sentences.to_pylist()
    hard_rows = hard.to_pydict()
    wrong = np.asarray(hard_rows["wrong"], bool)
    ids, clusters = np.asarray(hard_rows["id"], object)[wrong], np.asarray(hard_rows["cluster"])[wrong]
    names = np.array([scenario_of.get(i) for i in ids], object)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    described = {r["cluster"] for r in rows}
    classes = np.asarray(hard_rows["class"], object)[wrong]
    cluster_class = {c: Counter(classes[clusters == c].tolist()).most_common(1)[0][0] for c in described}
    out = {"default": default, "scenarios": {}, "distractors": {}}
    for s in planted:
        mine = clusters[(names == s.name) & (clusters >= 0)]
        counts = Counter(c for c in mine.tolist() if c in described)
        entry = {"failures": int((names == s.name).sum()), "cluster": None, "methods": {}}
        if counts:
            c = counts.most_common(1)[0][0]
            cls = cluster_class[c]
            entry |= {"cluster": int(c), "class": cls, "share": counts[c] / len(mine)}
            for m in methods:
                ranked = sorted((r for r in rows if r["cluster"] == c and r["method"] == m), key=lambda r: r["rank"])
                same = sorted((r for r in rows if r["method"] == m and r["validated"] and cluster_class[r["cluster"]] == cls),
                              key=lambda r: -r["score"])
                entry["methods"][m] = {"rank": _first([r for r in ranked if r["validated"]], s, cls),
                                       "rank_class": _first(same, s, cls),
                                       "rank_unvalidated": _first(ranked, s, cls),
                                       "shown": next((r["sentence"] for r in ranked if r["shown"]), None)}
        out["scenarios"][s.name] = entry
    for m in methods:
        mine = [r for r in rows if r["method"] == m]
        out["distractors"][m] = {"shown": sum(bool(r["shown"] and r["distractor"]) for r in mine),
                                 "validated": sum(bool(r["validated"] and r["distractor"]) for r in mine),
                                 "examples": sorted({r["sentence"] for r in mine if r["shown"] and r["distractor"]})[:5]}
    return out
