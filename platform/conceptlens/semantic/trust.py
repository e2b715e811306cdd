"""Can the VLM be trusted as the oracle on this data? Two checks that need no ground truth.

Everything the semantic analysis concludes rests on the VLM: the aligner maps the classifier's
features into its space, concepts are scored by its text tower and fault localisation asks it
for the true class. On a user's data the VLM may know neither the classes nor the concepts, and
then every heatmap still comes out looking like a finding. Before results are presented:

* **Does the VLM see the classes?** Its zero-shot accuracy on the analysed rows, as *skill* over
  chance: ``(accuracy − 1/K) / (1 − 1/K)`` (0 = chance, 1 = perfect). Below ``min_skill`` the
  class prompts mean nothing to it: fault localisation (which asks the VLM for the true class)
  and the blamed concepts are not findings.
* **Can it tell each concept apart from its absence, on this data?** The concept set's *absence
  prompt* is its template filled with a neutral phrase ("a photo of an object"). Over the
  analysed images we correlate the VLM's score for the concept with its score for the absence
  prompt. Where the correlation reaches ``max_absence_r`` (0.8), the concept's score is mostly the
  absence prompt's score again: it ranks images by how much they look like "an object", not by
  the concept, so cells and blame about that concept are marked unreliable.
  On ConceptWorld's tiny CLIP this flags ``pattern=plain`` (r 0.90; its truth retrieval AUROC is
  0.50) and ``occlusion=visible`` (r 0.83, the default state of every object); every other value
  stays below r 0.55.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from conceptlens.pipeline.stats import skill as zero_shot_skill


class AbsenceCorrelation:
    """Streaming Pearson correlation of each concept's score with the absence prompt's score:
    ``update(concept_scores (N, C), absence_scores (N,))`` per batch, then ``value`` ``float64 (C,)``."""

    def __init__(self):
        self.n, self.sums = 0, None

    def update(self, concept_scores: np.ndarray, absence_scores: np.ndarray) -> None:
        x, y = np.asarray(concept_scores, np.float64), np.asarray(absence_scores, np.float64)
        if not len(y):
            return
        batch = [x.sum(0), y.sum(), (x * x).sum(0), (y * y).sum(), (x * y[:, None]).sum(0)]
        self.sums = batch if self.sums is None else [a + b for a, b in zip(self.sums, batch)]
        self.n += len(y)

    @property
    def value(self) -> np.ndarray:
        if self.n < 3:
            raise ValueError(f"the trust check needs at least 3 rows, got {self.n}")
        sx, sy, sxx, syy, sxy = self.sums
        cov = sxy - sx * sy / self.n
        var_x, var_y = sxx - sx * sx / self.n, syy - sy * sy / self.n
        constant = (var_x <= 1e-9 * sxx) | (var_y <= 1e-9 * syy)  # rounding leaves a constant a tiny variance
        with np.errstate(invalid="ignore", divide="ignore"):
            r = cov / np.sqrt(np.maximum(var_x, 0) * max(var_y, 0))
        return np.where(constant | ~np.isfinite(r), 1.0, r)  # a constant score cannot tell anything apart


@dataclass
class Trust:
    """The verdict of both checks; ``reliable(concept)`` says whether results about a concept may be
    presented as findings."""
    zero_shot: float
    classes: int
    absence_r: dict[str, float]
    min_skill: float = 0.2
    max_absence_r: float = 0.8
    rows: int = 0

    @property
    def skill(self) -> float:
        return zero_shot_skill(self.zero_shot, self.classes)

    @property
    def sees_classes(self) -> bool:
        return self.skill >= self.min_skill

    @property
    def unseen_concepts(self) -> list[str]:
        return [c for c, r in self.absence_r.items() if r >= self.max_absence_r]

    def reliable(self, concept: str) -> bool:
        return self.sees_classes and self.absence_r.get(concept, 1.0) < self.max_absence_r

    def warnings(self) -> list[str]:
        """One line per problem, for the console and the outputs."""
        lines = []
        if not self.sees_classes:
            lines.append(f"the VLM does not recognise these classes: zero-shot accuracy {self.zero_shot:.3f} "
                         f"where chance is {1 / self.classes:.3f} (skill {self.skill:.2f} < {self.min_skill}); "
                         f"fault localisation and blamed concepts are unreliable: use a VLM that knows the "
                         f"classes (vlm.arch / vlm.pretrained) or class prompts it understands")
        unseen = self.unseen_concepts
        if unseen:
            lines.append(f"the VLM cannot tell {len(unseen)} of {len(self.absence_r)} concepts apart from their "
                         f"absence on this data (score correlation with the absence prompt ≥ {self.max_absence_r}): "
                         f"{', '.join(unseen[:8])}{' …' if len(unseen) > 8 else ''}; they are marked unreliable")
        return lines

    def as_dict(self) -> dict:
        return {"vlm_zero_shot": self.zero_shot, "chance": 1 / self.classes, "skill": self.skill,
                "min_skill": self.min_skill, "sees_classes": self.sees_classes, "rows": self.rows,
                "absence_r": self.absence_r, "max_absence_r": self.max_absence_r,
                "unreliable_concepts": self.unseen_concepts, "warnings": self.warnings()}


def read_trust(analysis: Path) -> Trust | None:
    """The trust check ``analyze`` wrote to ``<analysis>/summary.json``; None when it has not run (or predates the
    check)."""
    path = Path(analysis) / "summary.json"
    found = json.loads(path.read_text()).get("trust") if path.is_file() else None
    if not found:
        return None
    return Trust(found["vlm_zero_shot"], round(1 / found["chance"]), dict(found["absence_r"]),
                 min_skill=found["min_skill"], max_absence_r=found["max_absence_r"], rows=found.get("rows", 0))


def assess(zero_shot: float, classes: int, absence: AbsenceCorrelation, concepts: list[str], *,
           min_skill: float = 0.2, max_absence_r: float = 0.8) -> Trust:
    """Both checks from the VLM's zero-shot accuracy over ``classes`` classes and the streamed correlation of
    each concept's VLM score with the absence prompt's, on the analysed rows."""
    return Trust(float(zero_shot), int(classes), {c: float(r) for c, r in zip(concepts, absence.value)},
                 min_skill=min_skill, max_absence_r=max_absence_r, rows=absence.n)
