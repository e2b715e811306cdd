"""Planted failure scenarios: how they bend the classifier's training data (or its head), and which images
they own.

A scenario acts on one attribute value (``"background=water"``) and a set of classes:

* ``spurious_correlation``: in ``train``, the classes carry the value with probability
  ``strength``; other classes keep the natural distribution (so the scenario plants one failure,
  not a second one in every class that meets the value), unless ``other_strength`` sets the
  probability that they carry it (0: never, so only the scenario's classes do). Its slice is the
  classes *without* the value (the model learnt to expect it) and, with ``other_strength`` set, the
  other classes *with* it (the model learnt to take it for the scenario's classes).
* ``blind_spot``: in ``train``, the classes never carry the value. Slice: the classes with it.
* ``rare_subgroup``: in ``train``, the classes keep the value for a share ``rate`` of the
  images that would naturally carry it. Slice: the classes with it.
* ``head_fault``: the training data stay natural; after training, only the classifier's head is
  edited so that a share ``strength`` of the classes' ``train`` images with the value go to the
  class ``target`` (:mod:`conceptlens.recipes.head_fault`). Slice: the classes with it.

Other splits follow the natural distribution, so each slice can be measured there.
:attr:`Scenario.fault_site` says where a scenario's fault lives, when its kind fixes it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

import numpy as np

from conceptlens.world.vocabulary import CLASSES, GROUPS, OCCLUDING, parse_attribute

KINDS = ("spurious_correlation", "blind_spot", "rare_subgroup", "head_fault")


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str
    classes: tuple[str, ...]
    attribute: str
    strength: float = 0.95
    rate: float = 0.02
    other_strength: Optional[float] = None
    target: Optional[str] = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"scenario {self.name!r}: kind {self.kind!r} is not one of {KINDS}")
        unknown = [c for c in self.classes if c not in CLASSES]
        if unknown or not self.classes:
            raise ValueError(f"scenario {self.name!r}: classes {unknown or '[]'} not in {CLASSES}")
        try:
            parse_attribute(self.attribute)
        except ValueError as err:
            raise ValueError(f"scenario {self.name!r}: {err}") from None
        for key in ("strength", "rate", "other_strength"):
            value = getattr(self, key)
            if value is not None and not 0 <= value <= 1:
                raise ValueError(f"scenario {self.name!r}: {key}={value} is not a probability in [0, 1]")
        if self.other_strength is not None and self.kind != "spurious_correlation":
            raise ValueError(f"scenario {self.name!r}: other_strength is a spurious_correlation knob, "
                             f"not one of {self.kind}; remove it")
        if self.kind != "head_fault" and self.target is not None:
            raise ValueError(f"scenario {self.name!r}: target is a head_fault knob, not one of {self.kind}; remove it")
        if self.kind == "head_fault" and (self.target not in CLASSES or self.target in self.classes):
            raise ValueError(f"scenario {self.name!r}: head_fault needs target, a class of {CLASSES} other than "
                             f"its classes {list(self.classes)}; got {self.target!r}")

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any]) -> "Scenario":
        """From a config entry (``ScenarioConfig`` fields, e.g. a run's ``config.json``); keys it lacks take the
        defaults, so runs written before a field existed still load."""
        return cls(**{**entry, "classes": tuple(entry["classes"])})

    @property
    def group(self) -> str:
        return parse_attribute(self.attribute)[0]

    @property
    def value(self) -> str:
        return parse_attribute(self.attribute)[1]

    @property
    def both_sides(self) -> bool:
        """A spurious correlation whose other classes, taught the value belongs to its own, fail with it too."""
        return self.other_strength is not None

    @property
    def partner(self) -> Optional[str]:
        """The other value of a two-valued group (``lighting=bright`` for ``lighting=dark``), else None."""
        values = GROUPS[self.group].values
        return f"{self.group}={[v for v in values if v != self.value][0]}" if len(values) == 2 else None

    @property
    def fault_site(self) -> Optional[str]:
        """Where the fault lives, when the kind fixes it: ``"head"`` for a head_fault (only the head was
        edited), ``"encoder"`` for a blind spot on an occluding condition (the encoder never learnt to see the
        shape through it, see :data:`~conceptlens.world.vocabulary.OCCLUDING`), else None (unknown)."""
        if self.kind == "head_fault":
            return "head"
        if self.kind == "blind_spot" and self.attribute in OCCLUDING:
            return "encoder"
        return None

    def contains(self, label: str, attributes: dict[str, str]) -> bool:
        """Whether an image is in this scenario's failure slice. A spurious correlation with ``other_strength``
        set also owns the other classes' images *with* the value: the shortcut's other side, which the model
        learnt to send to the scenario's classes."""
        has_value = attributes[self.group] == self.value
        if label not in self.classes:
            return self.kind == "spurious_correlation" and self.other_strength is not None and has_value
        return not has_value if self.kind == "spurious_correlation" else has_value

    def bend(self, label: str, attributes: dict[str, str], rng: np.random.Generator) -> None:
        """Resample ``attributes[group]`` in place as the classifier's training data should see it.

        Draws from ``rng`` only where it resamples, so a scenario leaves every other image's draws alone."""
        if self.kind == "spurious_correlation":
            # other classes keep their natural distribution unless other_strength is set: no second, unplanted failure
            carry = self.strength if label in self.classes else self.other_strength
            if carry is not None:
                attributes[self.group] = self.value if rng.random() < carry else self._other_value(rng)
        elif self.kind in ("blind_spot", "rare_subgroup") and label in self.classes \
                and attributes[self.group] == self.value:
            keep = self.kind == "rare_subgroup" and rng.random() < self.rate
            if not keep:
                attributes[self.group] = self._other_value(rng)

    def _other_value(self, rng: np.random.Generator) -> str:
        group = GROUPS[self.group]
        others = [(v, w) for v, w in zip(group.values, group.weights) if v != self.value]
        weights = np.array([w for _, w in others])
        return others[rng.choice(len(others), p=weights / weights.sum())][0]
