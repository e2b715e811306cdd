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
  the concept, so cells and blame about that concept are marked unreliable. Beside it, the concept's *own
  spread*: the standard deviation of its score left after the absence prompt's part is taken out, over the
  median of the set's concepts. A concept the VLM cannot see barely moves its score from image to image beyond
  what "an object" moves; under ``min_spread`` (0.75 of a typical concept's) it is unreliable too.
* **Is the VLM decisive about each value of a group?** A value of an exclusive group (``weather=fog`` among the
  weathers) is present where it outscores its siblings, so it is judged by that choice instead: its
  *decisiveness* (:class:`GroupDecisiveness`), how far its share of the group's softmax swings between 0 and 1
  from row to row. Under ``min_decisive`` (0.85) it is unreliable. A two-valued group's values share one
  decisiveness.

  Measured (issue 27, retrieval AUROC of the group softmax against the truth): on the ``captions`` observer
  (seeds 0–2) the values it is blind to (AUROC < 0.70: the never-said pattern, occlusion, rain at seed 2) have a
  decisiveness of 0.82 or less, the values it sees (AUROC ≥ 0.85) 0.87 or more, except ``color=blue`` at seed 0
  (0.69, AUROC 0.96); on the supervised tiny CLIP (seeds 1, 2) every value is 0.92 or more. The absence test
  alone flags the supervised CLIP's ``pattern=plain`` (r 0.87), whose group AUROC is 0.94, and misses the captions
  CLIP's ``weather=rain`` (r 0.60); decisiveness gets both right. The margins are thin (0.82 against 0.87), and
  the values were chosen on these seeds.
* **Probes** (:mod:`conceptlens.semantic.probes`), where a user gave them, decide a probed concept's trust by the
  detector's measured sensitivity and specificity instead.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from conceptlens.models import concept_groups, two_valued
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

    @property
    def spread(self) -> np.ndarray:
        """``(C,)``: each concept's *own* spread, the standard deviation of its score left after the absence
        prompt's part is taken out (``sd · √(1 − r²)``), over the median of the concepts' (1 = a typical concept
        of the set)."""
        sx, _, sxx, _, _ = self.sums
        sd = np.sqrt(np.maximum(sxx - sx * sx / self.n, 0) / self.n)
        own = sd * np.sqrt(np.clip(1 - self.value ** 2, 0, 1))
        typical = np.median(own)
        return own / typical if typical > 0 else np.zeros_like(own)


class GroupDecisiveness:
    """Streaming *decisiveness* of each value of an exclusive group: over the rows, the standard deviation of its
    share of the group's softmax (CLIP's temperature, 100) over the largest it could have with that mean share,
    ``√(p̄(1 − p̄))``. A VLM that sees the group gives each value a share near 0 or 1 (decisiveness near 1); one that
    does not spreads the shares evenly, row after row (near 0). ``update(scores (N, C))`` per batch, then
    ``value``: ``{concept index: decisiveness}`` for the values of every group of ``concepts``."""

    TEMPERATURE = 100.0

    def __init__(self, concepts: list[str]):
        self.groups = concept_groups(concepts)
        self.n, self.sums, self.squares = 0, np.zeros(len(concepts)), np.zeros(len(concepts))

    def update(self, scores: np.ndarray) -> None:
        scores = np.asarray(scores, np.float64)
        for members in self.groups:
            logits = self.TEMPERATURE * scores[:, members]
            share = np.exp(logits - logits.max(1, keepdims=True))
            share /= share.sum(1, keepdims=True)
            self.sums[members] += share.sum(0)
            self.squares[members] += (share * share).sum(0)
        self.n += len(scores)

    @property
    def value(self) -> dict[int, float]:
        out = {}
        for j in (j for members in self.groups for j in members):
            mean = self.sums[j] / max(self.n, 1)
            var = max(self.squares[j] / max(self.n, 1) - mean * mean, 0.0)
            out[j] = float(np.sqrt(var / (mean * (1 - mean)))) if 0 < mean < 1 else 0.0
        return out


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
    probe_j: dict[str, float] = field(default_factory=dict)  # concept probes' J = se + sp − 1, where probed
    min_probe_j: float = 0.5
    spread: dict[str, float] = field(default_factory=dict)  # AbsenceCorrelation.spread per concept
    min_spread: float = 0.75
    decisive: dict[str, float] = field(default_factory=dict)  # GroupDecisiveness per value of an exclusive group
    min_decisive: float = 0.85

    @property
    def skill(self) -> float:
        return zero_shot_skill(self.zero_shot, self.classes)

    @property
    def sees_classes(self) -> bool:
        return self.skill >= self.min_skill

    def _sees_alone(self, concept: str) -> bool:
        if concept in self.probe_j:
            return self.probe_j[concept] >= self.min_probe_j
        if concept in self.decisive:
            return self.decisive[concept] >= self.min_decisive
        return self.absence_r.get(concept, 1.0) < self.max_absence_r and self.spread.get(concept, 1.0) >= self.min_spread

    def sees(self, concept: str) -> bool:
        """Whether the VLM tells ``concept`` apart: by its probes where it has them (they measure it), else by the
        absence check. A value of a two-valued group is present where it outscores the other value, so the pair is
        seen as soon as either value is (a VLM that knows "dark" tells dark from bright even if "bright" means
        nothing to it)."""
        partner = self._partners.get(concept)
        return self._sees_alone(concept) or (partner is not None and self._sees_alone(partner))

    @property
    def _partners(self) -> dict[str, str]:
        """The two values of each two-valued group, where both are judged as group values (by decisiveness or
        probes): free concepts that happen to share a name's group are no pair."""
        names = list(self.absence_r)
        judged = set(self.decisive) | set(self.probe_j)
        pairs = [(names[a], names[b]) for a, b in two_valued(names).items() if {names[a], names[b]} <= judged]
        return {a: b for a, b in pairs} | {b: a for a, b in pairs}

    @property
    def unseen_concepts(self) -> list[str]:
        return [c for c in self.absence_r if not self.sees(c)]

    def reliable(self, concept: str) -> bool:
        return self.sees_classes and self.sees(concept)

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
            how = (f"a group's values: decisiveness < {self.min_decisive}; other concepts: score correlation with the "
                   f"absence prompt ≥ {self.max_absence_r} or own spread < {self.min_spread} of a typical concept's" +
                   (f", or probes' J < {self.min_probe_j}" if self.probe_j else ""))
            lines.append(f"the VLM cannot tell {len(unseen)} of {len(self.absence_r)} concepts apart from their "
                         f"absence on this data ({how}): "
                         f"{', '.join(unseen[:8])}{' …' if len(unseen) > 8 else ''}; they are marked unreliable")
        return lines

    def as_dict(self) -> dict:
        return {"vlm_zero_shot": self.zero_shot, "chance": 1 / self.classes, "skill": self.skill,
                "min_skill": self.min_skill, "sees_classes": self.sees_classes, "rows": self.rows,
                "absence_r": self.absence_r, "max_absence_r": self.max_absence_r,
                "spread": self.spread, "min_spread": self.min_spread,
                "decisive": self.decisive, "min_decisive": self.min_decisive,
                "probe_j": self.probe_j, "min_probe_j": self.min_probe_j,
                "unreliable_concepts": self.unseen_concepts, "warnings": self.warnings()}


def read_trust(analysis: Path) -> Trust | None:
    """The trust check ``analyze`` wrote to ``<analysis>/summary.json``; None when it has not run (or predates the
    check)."""
    path = Path(analysis) / "summary.json"
    found = json.loads(path.read_text()).get("trust") if path.is_file() else None
    if not found:
        return None
    return Trust(found["vlm_zero_shot"], round(1 / found["chance"]), dict(found["absence_r"]),
                 min_skill=found["min_skill"], max_absence_r=found["max_absence_r"], rows=found.get("rows", 0),
                 probe_j=dict(found.get("probe_j", {})), min_probe_j=found.get("min_probe_j", 0.5),
                 spread=dict(found.get("spread", {})), min_spread=found.get("min_spread", 0.0),
                 decisive=dict(found.get("decisive", {})), min_decisive=found.get("min_decisive", 0.0))


def assess(zero_shot: float, classes: int, absence: AbsenceCorrelation, concepts: list[str], *,
           min_skill: float = 0.2, max_absence_r: float = 0.8, min_spread: float = 0.75,
           decisiveness: GroupDecisiveness | None = None, min_decisive: float = 0.85, calibration=None) -> Trust:
    """Both checks from the VLM's zero-shot accuracy over ``classes`` classes and the streamed correlation of
    each concept's VLM score with the absence prompt's, on the analysed rows; with a probe ``calibration``
    (:class:`~conceptlens.semantic.probes.Calibration`) each probed concept is judged by its probes instead."""
    probe_j = {} if calibration is None else {
        c: float(calibration.j[i]) for i, c in enumerate(calibration.concepts) if calibration.probed[i]}
    return Trust(float(zero_shot), int(classes), {c: float(r) for c, r in zip(concepts, absence.value)},
                 min_skill=min_skill, max_absence_r=max_absence_r, rows=absence.n, probe_j=probe_j,
                 spread={c: float(v) for c, v in zip(concepts, absence.spread)}, min_spread=min_spread,
                 decisive={concepts[j]: v for j, v in decisiveness.value.items()} if decisiveness else {},
                 min_decisive=min_decisive,
                 min_probe_j=calibration.min_j if calibration is not None else 0.5)
