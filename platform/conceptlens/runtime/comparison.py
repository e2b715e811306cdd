"""Like-for-like comparisons of the concept filter (issue 25): what its concept signals add, judged on paired intervals.

The filter's heads read signals no standard baseline has: how far the VLM and the aligned encoder features prefer the
predicted class's prompt (``vlm_margin``, ``aligned_margin``) and how well the two agree (``agreement``). Beating the
baselines could come from those alone, so two detectors isolate the concept signals (:data:`CONCEPT_SIGNALS`):

* :func:`same_signal_parts`: the stacked baseline's detectors plus the filter's side signals
  (:data:`SIDE_SIGNALS`, those of them the filter reads), each a :class:`FilterSignal`; fed to
  :class:`~conceptlens.runtime.detectors.Stacked` on the filter's head fold it is a supervised baseline with every
  signal the filter has except its concept heatmaps;
* :func:`without_concepts`: the filter itself, its heads refitted without the concept signals (the ablation).

:func:`paired_differences` then compares the filter's scores with each other detector's on the same rows by
DeLong's paired test (:func:`conceptlens.pipeline.stats.delong`): AUROC difference, ours minus theirs, with its
interval and p, so that "above" is decided on an interval rather than on two point estimates.
"""
from __future__ import annotations

import copy

import numpy as np

from conceptlens.pipeline.stats import delong
from conceptlens.runtime.detectors import Detector
from conceptlens.runtime.filter import CONCEPT_SIGNALS, ConceptFilter

__all__ = ["SIDE_SIGNALS", "FilterSignal", "side_signals", "same_signal_parts", "without_concepts",
           "paired_differences"]

SIDE_SIGNALS = ("vlm_margin", "aligned_margin", "agreement")  # the filter's VLM signals no baseline or heatmap gives


class FilterSignal(Detector):
    """One signal of a fitted filter (:meth:`ConceptFilter.signals` column ``signal``) as a detector score, float64
    (N,). Its sign is the signal's own: a stacked fit weighs it either way."""

    def __init__(self, filt: ConceptFilter, signal: str):
        if signal not in filt.signal_names:
            raise ValueError(f"the filter reads no signal {signal!r} (it reads {list(filt.signal_names)})")
        self.filt, self.name = filt, signal

    def score(self, batch: dict) -> np.ndarray:
        return self.filt.signals(batch)[:, self.filt.signal_names.index(self.name)]


def side_signals(filt: ConceptFilter) -> tuple[str, ...]:
    """The :data:`SIDE_SIGNALS` that ``filt`` reads (``concepts_from='aligned'`` reads ``aligned_margin`` only)."""
    return tuple(s for s in SIDE_SIGNALS if s in filt.signal_names)


def same_signal_parts(filt: ConceptFilter, parts: dict[str, Detector]) -> dict[str, Detector]:
    """The stacked baseline's fitted detectors ``parts`` plus the fitted filter's side signals."""
    return dict(parts) | {s: FilterSignal(filt, s) for s in side_signals(filt)}


def without_concepts(filt: ConceptFilter) -> ConceptFilter:
    """An unfitted copy of ``filt`` whose heads leave out :data:`CONCEPT_SIGNALS`: fit it as the filter was (same
    calibration rows, folds and seed) to get the ablation. It cannot be saved as a bundle."""
    ablation = copy.deepcopy(filt)
    ablation.without = tuple(dict.fromkeys((*filt.without, *CONCEPT_SIGNALS)))
    return ablation


def paired_differences(defective: np.ndarray, ours: np.ndarray, others: dict[str, np.ndarray],
                       confidence: float = 0.95) -> dict[str, dict]:
    """Per other detector: ``{"difference", "low", "high", "p", "auroc", "other_auroc"}``, the AUROC of ``ours``
    minus that of the other scores on the same rows (``defective`` bool (N,) the positives; scores float (N,)), its
    DeLong interval at ``confidence`` and the two-sided p of no difference."""
    out = {}
    for name, theirs in others.items():
        r = delong(defective, theirs, ours, confidence)  # delong's difference is its second score minus its first
        out[name] = {"difference": r["difference"], "low": float(r["low"]), "high": float(r["high"]), "p": r["p"],
                     "auroc": r["b"], "other_auroc": r["a"]}
    return out
