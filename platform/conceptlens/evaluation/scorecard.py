"""The scorecard's sections, as plain functions on arrays: the world (which scenarios are planted),
fault localisation per scenario, and the runtime filter per planted slice. The semantic section is
:func:`conceptlens.evaluation.blame.semantic_scores`.

Rows are described by (N,) arrays; ``scenario`` is an object array of scenario names, None for rows
outside every planted slice (their errors are the *natural* ones).
"""
from __future__ import annotations

import math

import numpy as np

from conceptlens.evaluation.world_models import MIN_SLICE_GAP, is_planted, slice_accuracies
from conceptlens.runtime import detection_metrics
from conceptlens.evaluation.ground_truth import Slice

NATURAL = "natural"  # the errors outside every planted slice


def world_section(correct: np.ndarray, scenario: np.ndarray, scenarios: list[Slice],
                  min_gap: float = MIN_SLICE_GAP) -> dict:
    """Each scenario's slice accuracy and gap on the given rows (``correct``: (N,) bool), and whether it is
    *planted* (gap ≥ ``min_gap``); ``planted`` and ``skipped`` list the names."""
    acc = slice_accuracies(np.asarray(correct, bool), np.asarray(scenario, object), [s.name for s in scenarios])
    out = {"accuracy": acc["accuracy"], "accuracy_rest": acc["accuracy_rest"], "n": acc["n"], "min_gap": min_gap,
           "scenarios": {}}
    for s in scenarios:
        sl = acc["slices"][s.name]
        planted = is_planted(sl["gap"], min_gap)
        out["scenarios"][s.name] = {"kind": s.kind, "classes": list(s.classes), "attribute": s.attribute,
                                    "n": sl["n"], "accuracy": sl["accuracy"], "gap": sl["gap"], "planted": planted}
    out["planted"] = [n for n, s in out["scenarios"].items() if s["planted"]]
    out["skipped"] = [n for n, s in out["scenarios"].items() if not s["planted"]]
    return out


def localisation_section(fault: np.ndarray, scenario: np.ndarray, planted: list[Slice]) -> dict:
    """Per planted scenario and for the natural errors: how many errors, how many blamed on the encoder and
    on the head, their shares, the ``truth`` (the scenario's :attr:`~conceptlens.evaluation.ground_truth.Slice.fault_site`,
    None when unknown) and ``agreement`` (the share blamed on the truth). ``fault``: (M,)
    ``"encoder"``/``"head"`` of the misclassified rows, ``scenario`` theirs."""
    fault, scenario = np.asarray(fault, object), np.asarray(scenario, object)
    groups = [(s.name, scenario == s.name, s.fault_site) for s in planted]
    groups.append((NATURAL, np.array([s is None for s in scenario], bool), None))
    out = {}
    for name, mask, truth in groups:
        errors = int(mask.sum())
        counts = {f: int((fault[mask] == f).sum()) for f in ("encoder", "head")}
        out[name] = {"errors": errors, **counts,
                     **{f"{f}_share": counts[f] / errors if errors else None for f in counts},
                     "truth": truth, "agreement": counts[truth] / errors if truth and errors else None}
    return out


def runtime_section(score: np.ndarray, flagged: np.ndarray, wrong: np.ndarray, scenario: np.ndarray,
                    planted: list[str], fpr: float) -> dict:
    """How well the filter's misclassification ``score`` (N,) separates each planted slice's errors from the
    correct rows (all correct rows: (N,) ``~wrong``): AUROC, AUPR and TPR at ``fpr`` (threshold set on these
    correct rows), and ``flagged``, the share of the slice's errors the filter's own verdict flags.
    ``overall`` scores every error, ``natural`` the errors outside the planted slices."""
    score, flagged, wrong = np.asarray(score, float), np.asarray(flagged, bool), np.asarray(wrong, bool)
    scenario = np.asarray(scenario, object)
    groups = {"overall": wrong, NATURAL: wrong & np.array([s is None for s in scenario], bool)}
    groups |= {name: wrong & (scenario == name) for name in planted}
    out = {}
    for name, errors in groups.items():
        rows = errors | ~wrong
        out[name] = detection_metrics(score[rows], errors[rows], fpr) | {
            "errors": int(errors.sum()), "flagged": float(flagged[errors].mean()) if errors.any() else None}
    return out


def finite(tree):
    """``tree`` (dicts, lists, numbers) with NaN and infinities as None and NumPy scalars as Python ones, so it is
    valid JSON for any reader."""
    if isinstance(tree, np.generic):
        tree = tree.item()
    if isinstance(tree, float) and not math.isfinite(tree):
        return None
    if isinstance(tree, dict):
        return {k: finite(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [finite(v) for v in tree]
    return tree
