"""The scorecard's neurons section: are the neurons named right, and does the repair fix the planted slices?

* Naming: for each planted spurious correlation, the top concept of its class's top voted (insufficient)
  neurons against the planted attribute; and for every voted neuron, the concept the VLM names against the
  attribute the world's truth names (the same partial correlation given the class, on the true attribute
  columns of the same held-out rows).
* Repair: per planted scenario and method, the slice's accuracy before and after on the held-out rows, the
  overall accuracy before and after, and whether the slice got worse beyond chance (exact one-sided
  McNemar test on the rows that changed, α = 0.05); and each method against plain cross-entropy trained the
  same way on the same rows (``vs_ce``: McNemar, the interval on the difference), which says what the method's
  own term adds over retraining the head.

Goals: ``head_retraining.<scenario>`` (the edited head lifts the spurious slice ≥ 10 points at ≤ 1 point overall,
none worse: met by any head retrained on these features, hence its name) and ``repair_beats_ce.<scenario>`` (the
edit's slice accuracy above plain cross-entropy's: the lower end of the paired interval above 0).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
from scipy import stats

from conceptlens.neurons import INSUFFICIENT, correlate
from conceptlens.pipeline.stats import mcnemar_paired
from conceptlens.evaluation.ground_truth import Slice

MIN_SLICE_GAIN, MAX_OVERALL_COST = 0.10, 0.01  # the repair's goal: +10 points on the spurious slice for ≤ 1 point
WORSE_ALPHA = 0.05
TOP_NEURONS = 3  # "the top voted neuron(s)": the planted attribute must name one of these, the first counted apart


def worse(before: np.ndarray, after: np.ndarray) -> float:
    """One-sided exact McNemar p-value that ``after`` (bool (N,) correct) is worse than ``before``."""
    lost, gained = int((before & ~after).sum()), int((~before & after).sum())
    if lost + gained == 0:
        return 1.0
    return float(stats.binomtest(lost, lost + gained, 0.5, alternative="greater").pvalue)


def repair_scores(predictions: pa.Table, scenario: np.ndarray, planted: list[Slice]) -> dict:
    """Per method: overall before/after and per planted scenario the slice before/after and ``worse`` p."""
    labels = predictions["label_index"].to_numpy()
    base = predictions["base"].to_numpy() == labels
    ce = predictions["ce"].to_numpy() == labels if "ce" in predictions.column_names else None
    out = {}
    for method in [c for c in predictions.column_names if c not in ("id", "label_index", "base")]:
        after = predictions[method].to_numpy() == labels
        slices = {}
        for s in planted:
            mine = scenario == s.name
            slices[s.name] = {"kind": s.kind, "rows": int(mine.sum()),
                              "before": float(base[mine].mean()) if mine.any() else None,
                              "after": float(after[mine].mean()) if mine.any() else None,
                              "worse_p": worse(base[mine], after[mine])}
            if ce is not None and method != "ce" and mine.any():
                slices[s.name]["vs_ce"] = mcnemar_paired(ce[mine], after[mine])
        out[method] = {"overall": {"before": float(base.mean()), "after": float(after.mean())}, "slices": slices}
        if ce is not None and method != "ce":
            out[method]["overall"]["vs_ce"] = mcnemar_paired(ce, after)
    return out


def truth_names(activations: np.ndarray, present: np.ndarray, labels: np.ndarray, concepts: list[str]) -> list:
    """Per neuron, the attribute value its activation follows most (highest positive partial correlation with
    the true attribute columns, given the class), and that correlation."""
    found = correlate(activations, present.astype(np.float64), labels)
    best = np.argmax(found.r, axis=1)
    return [(concepts[j], float(found.r[i, j])) for i, j in enumerate(best)]


def naming_scores(neurons: pa.Table, activations: np.ndarray, present: np.ndarray, labels: np.ndarray,
                  concepts: list[str], planted: list[Slice]) -> dict:
    """``agreement``: share of the voted insufficient neurons whose VLM-named top concept is the truth's;
    ``spurious``: per planted spurious correlation, its class's top neurons with both names."""
    rows = [r for r in neurons.to_pylist() if r["direction"] == INSUFFICIENT]
    unique = sorted({r["neuron"] for r in rows})
    truth = dict(zip(unique, truth_names(activations[:, unique], present, labels, concepts))) if unique else {}
    named = {r["neuron"]: (r["concepts"][0] if r["concepts"] else None) for r in rows}
    agree = [named[n] == truth[n][0] for n in unique]
    spurious = {}
    for s in (s for s in planted if s.kind == "spurious_correlation"):
        for cls in s.classes:
            top = [r for r in rows if r["class"] == cls][:TOP_NEURONS]
            found = [{"neuron": r["neuron"], "named": named[r["neuron"]], "truth": truth[r["neuron"]][0],
                      "truth_r": truth[r["neuron"]][1], "share": r["share"]} for r in top]
            spurious[f"{s.name}.{cls}"] = {
                "attribute": s.attribute, "neurons": found,
                "first": bool(found) and found[0]["named"] == s.attribute,
                "among_top": any(f["named"] == s.attribute for f in found)}
    return {"voted": len(unique), "agreement": float(np.mean(agree)) if agree else None, "spurious": spurious}


def neurons_section(neurons: pa.Table, predictions: pa.Table, activations: np.ndarray, present: np.ndarray,
                    scenario: np.ndarray, concepts: list[str], planted: list[Slice], edit: str) -> dict:
    """The section: ``activations`` float (N, D) pooled features, ``present`` bool (N, C) true attribute values
    and ``scenario`` (N,) of the rows of ``predictions`` (the held-out rows), in its order."""
    labels = predictions["label_index"].to_numpy()
    return {"rows": predictions.num_rows, "edit": edit,
            "naming": naming_scores(neurons, activations, present, labels, concepts, planted),
            "repair": repair_scores(predictions, scenario, planted)}


def neuron_goals(section: dict) -> dict:
    """``neuron_named.<scenario>.<class>`` (the planted attribute names the class's top neuron),
    ``head_retraining.<scenario>`` (the edit lifts the spurious slice ≥ 10 points at ≤ 1 point overall, and no
    planted slice gets worse beyond chance) and ``repair_beats_ce.<scenario>`` (the edit's slice accuracy minus
    plain cross-entropy's, paired: met when its 95 % interval lies above 0)."""
    out = {}
    for key, s in section["naming"]["spurious"].items():
        out[f"neuron_named.{key}"] = {"value": s["neurons"][0]["named"] if s["neurons"] else None,
                                      "target": s["attribute"], "met": s["first"]}
    edit = section["repair"].get(section["edit"])
    if edit is None:
        return out
    overall = edit["overall"]["after"] - edit["overall"]["before"]
    harmed = [n for n, sl in edit["slices"].items() if sl["worse_p"] < WORSE_ALPHA]
    for name, sl in edit["slices"].items():
        if sl["kind"] != "spurious_correlation":
            continue
        gain = None if sl["before"] is None else sl["after"] - sl["before"]
        out[f"head_retraining.{name}"] = {
            "value": gain, "target": MIN_SLICE_GAIN, "overall_change": overall, "harmed": harmed,
            "met": gain is not None and gain >= MIN_SLICE_GAIN and overall >= -MAX_OVERALL_COST and not harmed}
        if "vs_ce" in sl:
            vs = sl["vs_ce"]
            out[f"repair_beats_ce.{name}"] = {"value": vs["difference"], "target": 0.0, "interval": [vs["low"], vs["high"]],
                                              "p": vs["p"], "met": bool(vs["low"] > 0)}
    return out
