"""Concept analysis of scored rows: heatmaps from both sources, fault localisation, zero-shot accuracy.

:class:`ConceptAnalysis` consumes batches of scored rows (see :mod:`conceptlens.semantic.scoring`) in
two streaming passes, so it never holds more than a batch:

    analysis = ConceptAnalysis(classes, concepts)
    for batch in scored: analysis.update(batch)            # moments, faults, zero-shot accuracy
    analysis.freeze()
    for batch in scored: analysis.update_presence(batch)   # binarized heatmaps
    result = analysis.result()
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from conceptlens.semantic.heatmaps import HeatmapAccumulator, Responsible, responsible_concepts
from conceptlens.semantic.localize import FaultSummary, localize
from conceptlens.semantic.scoring import SOURCES, stack


@dataclass
class AnalysisResult:
    heatmaps: dict[str, pa.Table]  # source -> long table (kind, class, concept, n, value, low, high, p, q, significant)
    responsible: dict[str, dict[str, list[Responsible]]]  # source -> class -> concepts
    faults: dict  # FaultSummary.summary
    zero_shot: dict[str, float]  # source -> zero-shot class accuracy
    rows: int
    misclassified: int
    standardizer: dict[str, tuple[np.ndarray, np.ndarray]]  # source -> per-concept (mean, std) of raw scores


class ConceptAnalysis:
    """Streams scored batches (``label_index``, ``prediction``, ``<source>_scores``, ``<source>_zero_shot``)."""

    def __init__(self, classes: list[str], concepts: list[str], *, presence_threshold: float = 1.0,
                 alpha: float = 0.05, top: int = 5, calibration=None):
        self.classes, self.concepts, self.alpha, self.top = list(classes), list(concepts), alpha, top
        # the probes calibrate the VLM's detectors: the aligned source (the classifier's view) keeps its z-scores
        self.heatmaps = {s: HeatmapAccumulator(classes, concepts, presence_threshold,
                                               calibration if s == "vlm" else None) for s in SOURCES}
        self.faults = FaultSummary(len(classes))
        self.zero_shot_hits = dict.fromkeys(SOURCES, 0)
        self.rows = 0

    def update(self, batch: dict) -> dict[str, np.ndarray]:
        """Pass 1. Returns the batch's fault localisation (see :func:`conceptlens.semantic.localize.localize`)."""
        labels, predictions = _ints(batch["label_index"]), _ints(batch["prediction"])
        self.rows += len(labels)
        for source, acc in self.heatmaps.items():
            acc.update(stack(batch[f"{source}_scores"]), labels, predictions)
            self.zero_shot_hits[source] += int((_ints(batch[f"{source}_zero_shot"]) == labels).sum())
        faults = localize(labels, predictions, _ints(batch["aligned_zero_shot"]), _ints(batch["vlm_zero_shot"]))
        self.faults.update(labels[faults["index"]], faults["fault"], faults["oracle_recognises"])
        return faults

    def freeze(self) -> None:
        for acc in self.heatmaps.values():
            acc.freeze()

    def update_presence(self, batch: dict) -> None:
        """Pass 2 (after :meth:`freeze`)."""
        labels, predictions = _ints(batch["label_index"]), _ints(batch["prediction"])
        for source, acc in self.heatmaps.items():
            acc.update_presence(stack(batch[f"{source}_scores"]), labels, predictions)

    def result(self) -> AnalysisResult:
        tables = {s: acc.tables(self.alpha) for s, acc in self.heatmaps.items()}
        faults = self.faults.summary(self.classes)
        return AnalysisResult(
            heatmaps=tables, responsible={s: responsible_concepts(t, self.top) for s, t in tables.items()},
            faults=faults, zero_shot={s: hits / max(self.rows, 1) for s, hits in self.zero_shot_hits.items()},
            rows=self.rows, misclassified=faults["overall"]["misclassified"],
            standardizer={s: (acc.mu, acc.sigma) for s, acc in self.heatmaps.items()})


def _ints(values) -> np.ndarray:
    return np.asarray(values, np.int64)

