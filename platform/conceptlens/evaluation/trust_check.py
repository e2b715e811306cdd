"""The trust check against the truth: does the per-concept check flag the concepts the VLM truly cannot see?

A concept is *blind* when the VLM's score for it retrieves the rows that truly carry it with an AUROC under
``blind_auroc`` (0.75) on the analysed rows. The check is scored on what it flags (``analyze``'s unreliable
concepts): ``caught`` (flagged and blind), ``missed`` (blind, not flagged) and ``false_flags`` (flagged, not
blind). A measurement beside the goals, not a goal: ConceptWorld's tiny CLIP is close to an oracle, so few of
its concepts are blind; the observer ladder is where the check is put to work.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score


def trust_check_section(vlm_scores: np.ndarray, concepts: list[str], present: np.ndarray, truth_concepts: list[str],
                        flagged: list[str], *, blind_auroc: float = 0.75) -> dict:
    """``vlm_scores``: ``(N, C)`` the VLM's score per analysed row and concept (``concepts``); ``present``: ``bool (N,
    T)`` the truth over ``truth_concepts``; ``flagged``: the concepts the check marked unreliable."""
    column = {c: j for j, c in enumerate(truth_concepts)}
    per, blind = {}, []
    for i, concept in enumerate(concepts):
        if concept not in column:
            continue
        truth = present[:, column[concept]]
        auroc = float(roc_auc_score(truth, vlm_scores[:, i])) if 0 < truth.sum() < len(truth) else None
        per[concept] = {"auroc": auroc, "flagged": concept in flagged,
                        "blind": auroc is not None and auroc < blind_auroc}
        if per[concept]["blind"]:
            blind.append(concept)
    scored = [c for c in flagged if c in per]
    caught = [c for c in scored if per[c]["blind"]]
    return {"blind_auroc": blind_auroc, "concepts": per, "blind": blind, "flagged": scored, "caught": caught,
            "missed": [c for c in blind if c not in scored], "false_flags": [c for c in scored if not per[c]["blind"]],
            "precision": len(caught) / len(scored) if scored else None,
            "recall": len(caught) / len(blind) if blind else None}
