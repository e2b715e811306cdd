"""Planted failure scenarios: how they bend the classifier's training data, and which images they own.

A scenario acts on one attribute value (``"background=water"``) and a set of classes:

* ``spurious_correlation``: in ``train``, the classes carry the value with probability
  ``strength``; other classes keep the natural distribution (so the scenario plants one failure,
  not a second one in every class that meets the value). Its slice is the classes *without*
  the value (the model learnt to expect it).
* ``blind_spot``: in ``train``, the classes never carry the value. Slice: the classes with it.
* ``rare_subgroup``: in ``train``, the classes keep the value for a share ``rate`` of the
  images that would naturally carry it. Slice: the classes with it.

Other splits follow the natural distribution, so each slice can be measured there.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from conceptlens.world.vocabulary import CLASSES, GROUPS, parse_attribute

KINDS = ("spurious_correlation", "blind_spot", "rare_subgroup")


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str
    classes: tuple[str, ...]
    attribute: str
    strength: float = 0.95
    rate: float = 0.02

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"scenario {self.name!r}: kind {self.kind!r} is not one of {KINDS}")
        unknown = [c for c in self.classes if c not in CLASSES]
        if unknown or not self.classes:
            raise ValueError(f"scenario {self.name!r}: classes {unknown or '[]'} not in {CLASSES}")
        parse_attribute(self.attribute)

    @property
    def group(self) -> str:
        return parse_attribute(self.attribute)[0]

    @property
    def value(self) -> str:
        return parse_attribute(self.attribute)[1]

    def contains(self, label: str, attributes: dict[str, str]) -> bool:
        """Whether an image is in this scenario's failure slice."""
        if label not in self.classes:
            return False
        has_value = attributes[self.group] == self.value
        return not has_value if self.kind == "spurious_correlation" else has_value

    def bend(self, label: str, attributes: dict[str, str], rng: np.random.Generator) -> None:
        """Resample ``attributes[group]`` in place as the classifier's training data should see it."""
        has_value = attributes[self.group] == self.value
        if self.kind == "spurious_correlation":
            if label in self.classes:  # other classes keep their natural distribution: no second, unplanted failure
                attributes[self.group] = self.value if rng.random() < self.strength else self._other_value(rng)
        elif label in self.classes and has_value:
            keep = self.kind == "rare_subgroup" and rng.random() < self.rate
            if not keep:
                attributes[self.group] = self._other_value(rng)

    def _other_value(self, rng: np.random.Generator) -> str:
        group = GROUPS[self.group]
        others = [(v, w) for v, w in zip(group.values, group.weights) if v != self.value]
        weights = np.array([w for _, w in others])
        return others[rng.choice(len(others), p=weights / weights.sum())][0]
