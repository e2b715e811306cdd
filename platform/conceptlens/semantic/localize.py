"""Fault localisation: is a misclassification the encoder's fault or the head's?

The CLIP-based oracle of METHODS.md §1: if zero-shot classification of the *aligned encoder
features* still gives the true class, the encoder carried the class and the head is at fault;
otherwise the encoder lost it. Whether the VLM itself recognises the image (zero-shot on its
own embedding) is recorded beside each verdict: where it does not, the oracle is unsure.
"""
from __future__ import annotations

import numpy as np

FAULTS = ("encoder", "head")


def localize(labels: np.ndarray, predictions: np.ndarray, aligned_zero_shot: np.ndarray,
             vlm_zero_shot: np.ndarray) -> dict[str, np.ndarray]:
    """For the misclassified rows: ``index`` into the batch, ``fault`` (``"encoder"``/``"head"``) and
    ``oracle_recognises`` (the VLM's zero-shot gives the true class)."""
    wrong = np.flatnonzero(labels != predictions)
    head = aligned_zero_shot[wrong] == labels[wrong]
    return {"index": wrong, "fault": np.where(head, "head", "encoder").astype(object),
            "oracle_recognises": vlm_zero_shot[wrong] == labels[wrong]}


class FaultSummary:
    """Streaming counts of faults per true class; ``summary(classes)`` gives shares per class and overall."""

    def __init__(self, classes: int):
        self.counts = np.zeros((classes, len(FAULTS)), np.int64)
        self.recognised = np.zeros((classes, len(FAULTS)), np.int64)

    def update(self, labels: np.ndarray, faults: np.ndarray, oracle_recognises: np.ndarray) -> None:
        which = (np.asarray(faults) == "head").astype(int)
        np.add.at(self.counts, (labels, which), 1)
        np.add.at(self.recognised, (labels, which), oracle_recognises.astype(np.int64))

    def summary(self, classes: list[str]) -> dict:
        def shares(counts: np.ndarray, recognised: np.ndarray) -> dict:
            total = int(counts.sum())
            out = {"misclassified": total}
            for j, fault in enumerate(FAULTS):
                out[fault] = int(counts[j])
                out[f"{fault}_share"] = counts[j] / total if total else None
                out[f"{fault}_oracle_recognises"] = int(recognised[j])
            return out

        return {"overall": shares(self.counts.sum(0), self.recognised.sum(0)),
                "per_class": {c: shares(self.counts[i], self.recognised[i]) for i, c in enumerate(classes)}}
