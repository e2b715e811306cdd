"""Concept probes: a few labelled example images per concept calibrate the VLM's detector of each concept.

A user gives probes as an image folder with one subfolder per concept (``probes/weather=fog/*.png``), the images
that show it (``analyze.probes``). A concept's *negatives* are the probes of the other values of its group
(``weather=rain``, ... : certain negatives), or, for a free-standing concept, every other concept's probes.
With them, per concept:

* its **detector**: a ``group=value`` concept is present where it scores highest in its group (the rule the
  heatmaps use); a free-standing concept where its raw score exceeds the threshold that best separates its
  probes (Youden's J), instead of the z-score rule;
* its **error rates** on the probes: sensitivity ``se`` (probes of the concept detected) and specificity ``sp``
  (negatives not detected), each with its Wilson interval, and ``J = se + sp − 1`` (0: the detector sees
  nothing, 1: a perfect one);
* its **correction**: a detector that misses a share of the concept dilutes every risk ratio about it toward 1.
  Each class's share of rows with the concept, among its failures and among its correct rows, is corrected
  by Rogan and Gladen's estimator ``p = (p_observed + sp − 1) / J`` (clipped to [0, 1]) before the ratio is
  taken. The test is not corrected: an error that does not depend on failure (the detector does not know which
  rows the classifier got wrong) keeps the null hypothesis of no association true where it is true, so Fisher's
  test on the detected counts stays valid, only less powerful (Bross, 1954).
* its **reliability**: a concept whose probes show ``J`` under ``analyze.min_probe_j`` is not a finding,
  whatever its scores say.

Without probes nothing changes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from conceptlens.models import concept_groups
from conceptlens.pipeline.datasets import classes_of, read_dataset
from conceptlens.pipeline.preflight import decode
from conceptlens.pipeline.stats import wilson


@dataclass
class Calibration:
    """Per concept (``concepts`` order): ``probed`` (bool: has positives and negatives), ``threshold`` (raw score
    above which a free-standing concept is present; NaN for group values and unprobed concepts), ``se``, ``sp``
    (NaN where unprobed) and the probe counts ``positives``, ``negatives``."""
    concepts: list[str]
    probed: np.ndarray
    threshold: np.ndarray
    se: np.ndarray
    sp: np.ndarray
    positives: np.ndarray
    negatives: np.ndarray
    min_j: float = 0.5
    intervals: dict = field(default_factory=dict)

    @property
    def j(self) -> np.ndarray:
        return self.se + self.sp - 1

    def reliable(self, concept: str) -> bool:
        """False where the probes show the detector cannot see the concept (J < ``min_j``); True where unprobed."""
        i = self.concepts.index(concept)
        return not self.probed[i] or bool(self.j[i] >= self.min_j)

    def as_dict(self) -> dict:
        return {"min_j": self.min_j, "concepts": {
            c: {"probed": bool(self.probed[i]), "positives": int(self.positives[i]), "negatives": int(self.negatives[i]),
                **({"se": float(self.se[i]), "sp": float(self.sp[i]), "j": float(self.j[i]),
                    "threshold": None if np.isnan(self.threshold[i]) else float(self.threshold[i]),
                    "se_interval": self.intervals["se"][i], "sp_interval": self.intervals["sp"][i],
                    "reliable": self.reliable(c)} if self.probed[i] else {})}
            for i, c in enumerate(self.concepts)}}


def youden_threshold(positive: np.ndarray, negative: np.ndarray) -> float:
    """The score threshold (present: score > threshold) that maximises sensitivity + specificity on the probes,
    midway between the two probe scores it falls between."""
    values = np.unique(np.concatenate([positive, negative]))
    cuts = np.concatenate([[values[0] - 1e-6], (values[:-1] + values[1:]) / 2, [values[-1] + 1e-6]])
    j = (positive[None, :] > cuts[:, None]).mean(1) + (negative[None, :] <= cuts[:, None]).mean(1)
    return float(cuts[int(np.argmax(j))])


def calibrate(scores: np.ndarray, labels: list[str], concepts: list[str], *, min_j: float = 0.5) -> Calibration:
    """The calibration from the probes' raw VLM scores ``(P, C)`` over ``concepts`` and each probe's concept
    ``labels`` (P,); a label that is not a concept is an error naming it."""
    unknown = sorted(set(labels) - set(concepts))
    if unknown:
        raise ValueError(f"probe folder(s) {unknown} name no concept of the concept set (analyze.probes); concepts "
                         f"are {concepts}")
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels, object)
    c = len(concepts)
    group_of = {j: members for members in concept_groups(concepts) for j in members}
    top_in_group = np.zeros(scores.shape, bool)
    for members in concept_groups(concepts):
        top_in_group[np.arange(len(scores)), np.asarray(members)[scores[:, members].argmax(1)]] = True
    probed, threshold = np.zeros(c, bool), np.full(c, np.nan)
    se, sp, pos_n, neg_n = np.full(c, np.nan), np.full(c, np.nan), np.zeros(c, int), np.zeros(c, int)
    se_iv, sp_iv = [None] * c, [None] * c
    for j, concept in enumerate(concepts):
        positive = labels == concept
        others = [concepts[k] for k in group_of.get(j, []) if k != j]
        negative = np.isin(labels, others) if j in group_of else ~positive
        pos_n[j], neg_n[j] = positive.sum(), negative.sum()
        if not positive.any() or not negative.any():
            continue
        probed[j] = True
        if j in group_of:
            detected = top_in_group[:, j]
        else:
            threshold[j] = youden_threshold(scores[positive, j], scores[negative, j])
            detected = scores[:, j] > threshold[j]
        hits, rejections = detected[positive].sum(), (~detected[negative]).sum()
        se[j], sp[j] = hits / pos_n[j], rejections / neg_n[j]
        se_iv[j] = [float(x) for x in wilson(hits, pos_n[j])]
        sp_iv[j] = [float(x) for x in wilson(rejections, neg_n[j])]
    return Calibration(list(concepts), probed, threshold, se, sp, pos_n, neg_n, min_j,
                       {"se": se_iv, "sp": sp_iv})


def corrected_share(observed: np.ndarray, se: np.ndarray, sp: np.ndarray) -> np.ndarray:
    """Rogan–Gladen: the true share of rows with a concept from the share detected, ``(p + sp − 1) / (se + sp − 1)``
    clipped to [0, 1]; the observed share where ``se``/``sp`` are NaN or the detector is no better than chance."""
    j = se + sp - 1
    usable = np.isfinite(j) & (j > 0.05)
    with np.errstate(invalid="ignore", divide="ignore"):
        true = np.clip((observed + sp - 1) / j, 0, 1)
    return np.where(usable, true, observed)


@torch.no_grad()
def probe_scores(vlm, concept_embeddings: np.ndarray, source: str | Path, image_size: int,
                 batch_size: int = 256) -> tuple[np.ndarray, list[str], list[tuple[str, str, str]]]:
    """The VLM's raw concept scores ``(P, C)`` of the probe images in ``source`` (a folder with a sub-folder per
    concept, or a manifest whose ``label`` column names each image's concept), decoded by ``embed``'s path at
    ``image_size``; each probe's concept; and ``(id, path, error)`` of each probe that could not be read."""
    table = read_dataset(source)
    images, label_index, unreadable = decode(table, image_size)
    if not len(images):
        raise ValueError(f"no readable probe images in {source} (analyze.probes)")
    names = classes_of(table)
    emb = torch.cat([vlm.encode_images(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])
    return emb.numpy() @ np.asarray(concept_embeddings, np.float32).T, [names[i] for i in label_index], unreadable
