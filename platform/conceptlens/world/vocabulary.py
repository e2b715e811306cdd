"""ConceptWorld's vocabulary: the object classes and the attribute groups.

Every attribute group takes exactly one value per image. Each value is also a binary
attribute column in the manifest (``<group>_<value>``), so the world has
``sum(len(values))`` binary attributes and conditions (24 by default).
"""
from __future__ import annotations

from dataclasses import dataclass

CLASSES: tuple[str, ...] = (
    "circle", "square", "triangle", "star", "cross",
    "hexagon", "heart", "crescent", "arrow", "diamond",
)


@dataclass(frozen=True)
class AttributeGroup:
    """One attribute group. ``phrases`` say each value in words, as captions use it.

    ``kind`` is where the phrase goes in a caption: ``"adjective"`` before the object's
    name ("a red star"), ``"context"`` after it ("a star on water").
    """

    name: str
    values: tuple[str, ...]
    phrases: tuple[str, ...]
    weights: tuple[float, ...]
    kind: str

    def phrase(self, value: str) -> str:
        return self.phrases[self.values.index(value)]


ATTRIBUTE_GROUPS: tuple[AttributeGroup, ...] = (
    AttributeGroup("size", ("small", "large"), ("small", "large"), (0.5, 0.5), "adjective"),
    AttributeGroup("pattern", ("plain", "striped", "dotted"), ("plain", "striped", "dotted"),
                   (1 / 3, 1 / 3, 1 / 3), "adjective"),
    AttributeGroup("color", ("red", "green", "blue", "yellow", "purple"),
                   ("red", "green", "blue", "yellow", "purple"), (0.2,) * 5, "adjective"),
    AttributeGroup("background", ("grass", "water", "sand", "indoor"),
                   ("on grass", "on water", "on sand", "indoors"), (0.25,) * 4, "context"),
    AttributeGroup("weather", ("clear", "rain", "snow", "fog"),
                   ("on a clear day", "in the rain", "in the snow", "in fog"),
                   (0.4, 0.2, 0.2, 0.2), "context"),
    AttributeGroup("lighting", ("bright", "dark"), ("in bright light", "in the dark"),
                   (0.75, 0.25), "context"),
    AttributeGroup("occlusion", ("visible", "occluded"), ("fully visible", "partly hidden"),
                   (0.8, 0.2), "context"),
)

GROUPS: dict[str, AttributeGroup] = {g.name: g for g in ATTRIBUTE_GROUPS}

# Conditions that hide the object's shape in the pixels. A classifier that never saw a class under one of
# them fails to *extract* the shape there, so a blind spot on them is a fault of the encoder; a blind spot on
# a visible property (a colour, a background) may as well be the head misreading features that are intact.
OCCLUDING: frozenset[str] = frozenset({"occlusion=occluded", "weather=fog", "lighting=dark"})


def attribute_columns() -> list[str]:
    """Names of the binary attribute columns, e.g. ``background_water``."""
    return [f"{g.name}_{v}" for g in ATTRIBUTE_GROUPS for v in g.values]


def parse_attribute(text: str) -> tuple[str, str]:
    """``"background=water"`` -> ``("background", "water")``, validated against the vocabulary."""
    group, sep, value = text.partition("=")
    if not sep or group not in GROUPS:
        raise ValueError(f"attribute {text!r}: expected <group>=<value>, group one of {sorted(GROUPS)}")
    if value not in GROUPS[group].values:
        raise ValueError(f"attribute {text!r}: value must be one of {list(GROUPS[group].values)}")
    return group, value


def caption(label: str, attributes: dict[str, str], include: set[str] | None = None) -> str:
    """A caption naming the object (``label`` or ``None`` for "object") and the groups in ``include``.

    >>> caption("star", {"color": "red", "background": "water"}, {"color", "background"})
    'a photo of a red star on water'
    """
    include = set(GROUPS) if include is None else include
    adjectives = [GROUPS[g].phrase(attributes[g]) for g in GROUPS
                  if g in include and GROUPS[g].kind == "adjective"]
    context = [GROUPS[g].phrase(attributes[g]) for g in GROUPS
               if g in include and GROUPS[g].kind == "context"]
    noun = " ".join(adjectives + [label or "object"])
    article = "an" if noun[0] in "aeiou" else "a"
    return " ".join([f"a photo of {article} {noun}"] + context)
