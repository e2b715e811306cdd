"""Captions the way the web writes them, for the realistic observers (``vlm.recipe: captions | shifted``).

A web caption names the object most of the time and an attribute only now and then: each attribute group is
mentioned with probability ``mention``, in a phrasing drawn from a synonym list (``web_captions.yaml``: "in fog",
"foggy", "in the mist", "hazy"), a share ``noise`` of the mentioned values is wrong (another value of the group),
and the groups in ``unseen`` are never mentioned, so the observer never learns them. No attribute label reaches the
model any other way.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import yaml

from conceptlens.world.vocabulary import GROUPS

SYNONYMS = Path(__file__).with_name("web_captions.yaml")


@dataclass(frozen=True)
class Phrasings:
    """The synonym list: caption ``templates`` (``{}`` is the noun phrase), the ``objects`` said instead of a class
    name, per group its ``kind`` (adjective or context) and each value's phrasings, and the groups left ``unseen``
    by default."""
    templates: list[str]
    objects: list[str]
    kinds: dict[str, str]
    values: dict[str, dict[str, list[str]]]
    unseen: list[str]

    @classmethod
    def load(cls, path: str | Path = SYNONYMS) -> "Phrasings":
        data = yaml.safe_load(Path(path).read_text())
        groups = data["groups"]
        missing = [f"{g}={v}" for g, group in GROUPS.items() for v in group.values
                   if not groups.get(g, {}).get("values", {}).get(v)]
        if missing:
            raise ValueError(f"{path}: no phrasing for {', '.join(missing)}")
        return cls(list(data["templates"]), list(data["objects"]), {g: groups[g]["kind"] for g in groups},
                   {g: {v: list(p) for v, p in groups[g]["values"].items()} for g in groups},
                   list(data.get("unseen") or []))


def web_caption(label: str, attributes: dict[str, str], phrasings: Phrasings, rng: np.random.Generator, *,
                mention: float = 0.3, noise: float = 0.1, unseen: Sequence[str] = (), name_class: float = 0.9) -> str:
    """One caption of an image of class ``label`` with ``attributes`` (group -> value).

    >>> p = Phrasings.load()
    >>> said = web_caption("star", {"weather": "fog"}, p, np.random.default_rng(0), mention=1.0, noise=0.0)
    >>> any(said.endswith(f"star {w}") for w in p.values["weather"]["fog"])
    True
    """
    adjectives, context = [], []
    for group, value in attributes.items():
        if group in unseen or rng.random() >= mention:
            continue
        if rng.random() < noise:
            others = [v for v in GROUPS[group].values if v != value]
            value = others[rng.integers(len(others))]
        options = phrasings.values[group][value]
        (adjectives if phrasings.kinds[group] == "adjective" else context).append(options[rng.integers(len(options))])
    rng.shuffle(adjectives)
    rng.shuffle(context)
    noun = label if rng.random() < name_class else phrasings.objects[rng.integers(len(phrasings.objects))]
    template = phrasings.templates[rng.integers(len(phrasings.templates))]
    phrase = " ".join(adjectives + [noun] + context)
    if template.startswith("{}") or template.startswith("my"):
        return template.format(phrase)
    return template.format(f"{'an' if phrase[0] in 'aeiou' else 'a'} {phrase}")
