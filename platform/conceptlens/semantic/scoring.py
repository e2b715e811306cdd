"""Concept scores of embedded rows: the single-input heatmaps, from aligned features and from the VLM.

``s_c(x) = cos(A(z), t_c)`` (the classifier's view, through the aligner) and the oracle
``s*_c(x) = cos(e, t_c)`` (the VLM's own view), plus zero-shot class predictions of both.
A plain callable on NumPy batches, so Ray Data, a loop and the serve endpoint share it.
"""
from __future__ import annotations

import numpy as np

from conceptlens.semantic.aligner import Aligner

SOURCES = ("aligned", "vlm")  # where concept scores come from: the classifier's encoder (aligned) or the VLM


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def stack(column) -> np.ndarray:
    """A batch column of equal-length vectors (object array of arrays, or 2-D) as ``float32 (N, D)``."""
    return np.asarray(np.stack(list(column)) if getattr(column, "dtype", None) == object else column, np.float32)


def source_embeddings(aligner: Aligner, batch: dict) -> dict[str, np.ndarray]:
    """The unit vectors each source scores, ``(N, E)``: the aligned encoder features and the VLM embedding."""
    return {"aligned": unit(aligner(stack(batch["features"]))), "vlm": unit(stack(batch["vlm_embedding"]))}


class ConceptScorer:
    """Adds ``aligned_scores`` / ``vlm_scores`` ``float32 (N, C)`` and ``aligned_zero_shot`` /
    ``vlm_zero_shot`` ``int64 (N,)`` to a batch with ``features`` ``(N, D)`` and ``vlm_embedding`` ``(N, E)``.

    ``concepts``: ``(C, E)`` and ``classes``: ``(K, E)`` L2-normalised text embeddings.
    """

    def __init__(self, aligner: Aligner, concepts: np.ndarray, classes: np.ndarray):
        self.aligner = aligner
        self.concepts, self.classes = np.asarray(concepts, np.float32), np.asarray(classes, np.float32)

    def __call__(self, batch: dict) -> dict:
        out = dict(batch)
        for source, emb in source_embeddings(self.aligner, batch).items():
            out[f"{source}_scores"] = emb @ self.concepts.T
            out[f"{source}_zero_shot"] = (emb @ self.classes.T).argmax(1).astype(np.int64)
        return out
