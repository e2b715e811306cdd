"""The observer against the truth: how well the VLM sees each concept, and whether the product noticed where it
does not (issue 27's ladder of observers).

* **Quality**, per concept of the analysis that the world has: retrieval AUROC of the VLM's score against the
  rows that truly carry the concept (for a value of an exclusive group, of its share of the group's softmax at
  CLIP's temperature, 100: the analysis calls the top value of the group present, so a value is seen when it
  outscores its siblings, whatever its raw cosine), and *presence agreement* (the share of rows where the analysis's presence
  rule, probe thresholds included, says what the truth says); the VLM's zero-shot class accuracy; the recipe it
  was trained by (``supervised`` is the upper bound, labelled so).
* **The trust check scored**: a concept is *blind* when its AUROC is under ``blind_auroc`` (0.70) and *seen* at
  ``seen_auroc`` (0.85) or more. ``caught`` (blind and flagged), ``missed`` (blind, not flagged) and the share of
  seen concepts flagged.
* **What no finding may name**: *distractors* (concepts the world never shows: names that are no attribute
  value of it) and the values of groups the observer never heard of (``vlm.captions.unseen`` on the realistic
  rungs). ``presented`` counts the blamed cells (the significant risk ratios the trust check backs) naming one,
  ``sentences`` the failure-mode sentences shown naming one.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from conceptlens.models import concept_groups

BLIND_AUROC, SEEN_AUROC, MAX_SEEN_FLAGGED = 0.70, 0.85, 0.10
TEMPERATURE = 100.0  # CLIP's logit scale: the group softmax of retrieval scores
UPPER_BOUND = "supervised"  # the recipe told every attribute: an oracle no user has


def concept_kind(concept: str, truth_concepts: list[str], unseen_groups: list[str]) -> str:
    """``attribute`` (the world has it), ``unseen_group`` (its group was never said to the observer) or
    ``distractor`` (the world never shows it)."""
    if concept not in truth_concepts:
        return "distractor"
    return "unseen_group" if concept.partition("=")[0] in unseen_groups else "attribute"


def retrieval_scores(scores: np.ndarray, concepts: list[str]) -> np.ndarray:
    """``(N, C)``: each exclusive group's values as their share of the group's softmax, free concepts as they are."""
    out = np.asarray(scores, np.float64).copy()
    for members in concept_groups(concepts):
        logits = TEMPERATURE * out[:, members]
        logits -= logits.max(1, keepdims=True)
        out[:, members] = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return out


def observer_section(vlm_scores: np.ndarray, presence: np.ndarray, concepts: list[str], present: np.ndarray,
                     truth_concepts: list[str], flagged: list[str], *, zero_shot: float, recipe: str,
                     unseen_groups: list[str], presented: list[tuple[str, str]], sentences: list[dict],
                     blind_auroc: float = BLIND_AUROC, seen_auroc: float = SEEN_AUROC) -> dict:
    """``vlm_scores``, ``presence``: ``(N, C)`` the VLM's score and the analysis's presence call per analysed row
    and concept (``concepts``); ``present``: ``bool (N, T)`` the truth over ``truth_concepts``; ``flagged``: the
    concepts the trust check marked unreliable; ``presented``: ``(class, concept)`` of the blamed cells presented
    as findings; ``sentences``: the shown failure-mode sentences as ``{"sentence", "terms"}``."""
    column = {c: j for j, c in enumerate(truth_concepts)}
    retrieval = retrieval_scores(vlm_scores, concepts)
    per = {}
    for i, concept in enumerate(concepts):
        kind = concept_kind(concept, truth_concepts, unseen_groups)
        entry = {"kind": kind, "flagged": concept in flagged, "auroc": None, "agreement": None}
        if concept in column:
            truth = present[:, column[concept]]
            if 0 < truth.sum() < len(truth):
                entry["auroc"] = float(roc_auc_score(truth, retrieval[:, i]))
            entry["agreement"] = float((presence[:, i] == truth).mean())
        per[concept] = entry
    scored = {c: e for c, e in per.items() if e["auroc"] is not None}
    blind = [c for c, e in scored.items() if e["auroc"] < blind_auroc]
    seen = [c for c, e in scored.items() if e["auroc"] >= seen_auroc]
    caught = [c for c in blind if per[c]["flagged"]]
    seen_flagged = [c for c in seen if per[c]["flagged"]]
    hidden = {c for c, e in per.items() if e["kind"] != "attribute"}
    bad_cells = sorted({f"{cls}: {c}" for cls, c in presented if c in hidden})
    bad_sentences = sorted({s["sentence"] for s in sentences if s.get("distractor") or
                            any(t.replace("!=", "=").partition("=")[0] in unseen_groups for t in s["terms"])})
    aurocs = [e["auroc"] for e in scored.values()]
    agreements = [e["agreement"] for e in per.values() if e["agreement"] is not None]
    return {"recipe": recipe, "upper_bound": recipe == UPPER_BOUND, "zero_shot": zero_shot,
            "unseen_groups": list(unseen_groups), "blind_auroc": blind_auroc, "seen_auroc": seen_auroc,
            "mean_auroc": float(np.mean(aurocs)) if aurocs else None,
            "mean_agreement": float(np.mean(agreements)) if agreements else None,
            "concepts": per, "blind": blind, "caught": caught, "missed": [c for c in blind if c not in caught],
            "seen": len(seen), "seen_flagged": seen_flagged,
            "seen_flagged_share": len(seen_flagged) / len(seen) if seen else None,
            "false_flags": [c for c in per if per[c]["flagged"] and c in scored and c not in blind],
            "presented_hidden": bad_cells, "sentences_hidden": bad_sentences}


def observer_goals(section: dict) -> dict:
    """The observer's goals: every blind concept flagged; at most 10 % of seen concepts flagged; no distractor or
    unseen-group concept presented as a finding or named by a sentence shown."""
    missed, share = section["missed"], section["seen_flagged_share"]
    hidden = len(section["presented_hidden"]) + len(section["sentences_hidden"])
    return {"observer_flags_blind": {"value": len(section["caught"]), "n": len(section["blind"]),
                                     "target": len(section["blind"]), "met": not missed, "missed": missed},
            "observer_seen_not_flagged": {"value": share, "target": MAX_SEEN_FLAGGED,
                                          "met": share is None or share <= MAX_SEEN_FLAGGED,
                                          "flagged": section["seen_flagged"]},
            "observer_hides_unseen": {"value": hidden, "target": 0, "met": hidden == 0,
                                      "examples": (section["presented_hidden"] + section["sentences_hidden"])[:5]}}
