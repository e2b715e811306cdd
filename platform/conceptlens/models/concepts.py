"""Concept sets: named concepts with prompt phrases, read from YAML, embedded by a VLM.

A concept set is a YAML file (or the name of a bundled one: ``conceptworld``, ``rival10``)::

    templates: ["a photo of {article} {}."]        # applied to every phrase
    class_templates: ["a photo of {article} {}."]  # zero-shot class prompts
    concepts:
      background=water: [object on water]          # concept name: its phrases
    absence: object                                # the neutral phrase: "a photo of an object" (default)

``{article}`` becomes "a" or "an" to suit the phrase. Each concept's text embedding is the
normalised mean of its prompts' embeddings (:class:`conceptlens.models.ConceptBank`).

Concepts named ``group=value`` that share a group (``lighting=bright``, ``lighting=dark``) are the
mutually exclusive values of one attribute: every image has exactly one of them (see
:func:`concept_groups`). Other names are free-standing concepts an image may or may not show.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import yaml

from conceptlens.models.vlm import VLM, ConceptBank

BUNDLED = Path(__file__).parent / "concept_sets"


def article(phrase: str) -> str:
    return "an" if phrase[:1].lower() in "aeiou" else "a"


def fill(templates: Sequence[str], phrases: Sequence[str]) -> list[str]:
    """Every template applied to every phrase: ``["a photo of {article} {}"]``, ``["owl"]`` -> ``["a photo of an owl"]``."""
    return [t.format(p, article=article(p)) for p in phrases for t in templates]


@dataclass(frozen=True)
class ConceptSet:
    """Concept names with their phrases, and the templates that turn phrases and class names into prompts."""
    concepts: dict[str, list[str]]
    templates: list[str]
    class_templates: list[str]
    source: str = ""
    absence: str = "object"  # the neutral phrase: the templates filled with it say "no concept in particular"

    @property
    def names(self) -> list[str]:
        return list(self.concepts)

    def prompts(self) -> dict[str, list[str]]:
        return {name: fill(self.templates, phrases) for name, phrases in self.concepts.items()}

    def bank(self, vlm: VLM) -> ConceptBank:
        return ConceptBank.from_prompts(vlm, self.prompts())

    def absence_embedding(self, vlm: VLM):
        """``(E,)``: the templates filled with the neutral phrase, the reference a concept must differ from."""
        return ConceptBank.from_prompts(vlm, {"absence": fill(self.templates, [self.absence])}).embeddings[0]

    def class_bank(self, vlm: VLM, classes: Sequence[str]) -> ConceptBank:
        """The zero-shot classifier: one embedding per class from ``class_templates``."""
        return ConceptBank.from_prompts(vlm, {c: fill(self.class_templates, [c]) for c in classes})


def concept_groups(names: Sequence[str]) -> list[list[int]]:
    """Indices of the mutually exclusive groups among concept ``names``: the names ``group=value`` that share
    their ``group`` with at least one other name, in order of first appearance.

    >>> concept_groups(["size=small", "size=large", "wet", "light=dark"])
    [[0, 1]]
    """
    by_group: dict[str, list[int]] = {}
    for j, name in enumerate(names):
        group, sep, value = name.partition("=")
        if sep and group and value:
            by_group.setdefault(group, []).append(j)
    return [members for members in by_group.values() if len(members) > 1]


def two_valued(names: Sequence[str]) -> dict[int, int]:
    """Each two-valued exclusive group's second member -> its first: with one value present per image, the second
    is the first's absence, so the pair is one finding (and one test), not two.

    >>> two_valued(["size=small", "size=large", "wet", "color=red", "color=blue", "color=green"])
    {1: 0}
    """
    return {members[1]: members[0] for members in concept_groups(names) if len(members) == 2}


def load_concepts(source: str | Path) -> ConceptSet:
    """A concept set from a YAML file or a bundled name; errors name the file and the problem."""
    path = Path(source)
    if not path.suffix and (BUNDLED / f"{source}.yaml").is_file():
        path = BUNDLED / f"{source}.yaml"
    if not path.is_file():
        bundled = sorted(p.stem for p in BUNDLED.glob("*.yaml"))
        raise ValueError(f"concept set {source!r} is neither a YAML file nor a bundled set {bundled}")
    data = yaml.safe_load(path.read_text()) or {}
    unknown = set(data) - {"templates", "class_templates", "concepts", "absence"}
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {sorted(unknown)}; expected templates, class_templates, concepts, "
                         f"absence")
    if not isinstance(data.get("absence", "object"), str) or not data.get("absence", "object").strip():
        raise ValueError(f"{path}: 'absence' must be a neutral phrase such as 'object'")
    concepts = data.get("concepts")
    if not isinstance(concepts, dict) or not concepts:
        raise ValueError(f"{path}: 'concepts' must map each concept name to a list of phrases")
    bad = [k for k, v in concepts.items() if not isinstance(v, list) or not v or not all(isinstance(p, str) for p in v)]
    if bad:
        raise ValueError(f"{path}: concept(s) {bad} need a non-empty list of phrases")
    templates = data.get("templates") or ["{}"]
    class_templates = data.get("class_templates") or ["a photo of {article} {}."]
    for t in templates + class_templates:
        if "{}" not in t:
            raise ValueError(f"{path}: template {t!r} has no '{{}}' for the phrase")
    return ConceptSet({str(k): v for k, v in concepts.items()}, templates, class_templates, str(path),
                      data.get("absence", "object"))
