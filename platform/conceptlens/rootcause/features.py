"""Failure features read from the tables earlier commands wrote, and the label block every extractor gets.

Table extractors (no image is read again):

* ``vlm``: the VLM's image embedding (transfer learning: a model not trained on the task);
* ``encoder``: the classifier's own pooled features (the fine-tuned model);
* ``concepts``: the VLM's concept scores, z-scored with `analyze`'s statistics (what the image shows, in the
  concept set's words).

The image extractors (``backbone``, ``autoencoder``, ``relevance``) live in :mod:`conceptlens.rootcause.images`.

:func:`with_labels` scales any extractor's features to unit RMS distance from their mean and appends a one-hot
block of the classifier's label for the row, times ``weight`` (``rootcause.class_weight``). A root cause is
something to fix for a class ("stars on water"); without the block, every extractor measured on the demo groups
failures first by what they look like (circles and hexagons mistaken for each other fall in one island, whatever
made them fail), and no internal index then prefers the finer split that separates the causes. The label is
part of every failure set (a failure is a row whose label and prediction differ), not ground truth of its cause.
"""
from __future__ import annotations

import numpy as np

TABLE_EXTRACTORS = {"vlm": "vlm_embedding", "encoder": "features", "concepts": "vlm_embedding"}


def concept_scores(vlm_embedding: np.ndarray, concepts: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """z-scored cosine of each row's VLM embedding ``(N, E)`` with each concept's text embedding ``(C, E)``."""
    unit = vlm_embedding / np.maximum(np.linalg.norm(vlm_embedding, axis=1, keepdims=True), 1e-12)
    return ((unit @ concepts.T - mean) / np.maximum(std, 1e-12)).astype(np.float32)


def with_labels(features: np.ndarray, labels: np.ndarray, classes: int, weight: float) -> np.ndarray:
    """``features`` ``(N, D)`` centred and scaled to unit RMS norm, with ``weight`` × one-hot(``labels``) appended
    (``(N, D + classes)``; unchanged when ``weight`` is 0)."""
    x = np.asarray(features, np.float32)
    if weight == 0:
        return x
    x = x - x.mean(0)
    x = x / max(float(np.sqrt((x ** 2).sum(1).mean())), 1e-12)
    block = np.zeros((len(x), classes), np.float32)
    block[np.arange(len(x)), np.asarray(labels, np.int64)] = weight
    return np.hstack([x, block])
