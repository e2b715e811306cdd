"""Sentence banks: templates × vocabularies from YAML, every sentence with the terms it names.

A vocabulary (``banks/conceptworld.yaml`` is the bundled one; a user's file has the same form) has groups of
mutually exclusive values, each value a phrase that goes before the object (``adjective``: "a *striped* heart")
or after it (``context``: "a star *on water*"), and distractor groups: words the data may never show, so that a
method can be wrong. :func:`build_bank` makes, for every object (each class, and the generic word):

* the object alone ("a photo of a star"),
* each value ("a photo of a star on water"), and each pair of values from two groups,
* "not" forms of each value of a (non-distractor) group with three or more values, alone and paired ("a photo
  of a star not on water"); in a two-valued group "not" is the other value, already in the bank.

Terms are ids: ``"group=value"``, ``"group!=value"`` for a negation. A sentence's *parents* are the sentences
with one of its terms left out (the object alone for a single term): a term earns its place in a sentence only
by what it adds to its parent (:func:`conceptlens.language.methods.term_gains`).

A negation is embedded by reflection (:func:`embed_bank`): ``normalize(2·e(parent) − e(positive))``, where the
parent is the sentence without the negated term and the positive names the value: as far from the positive as
the parent is, on the other side. A small CLIP trained on captions has never read "not".
"""
from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import yaml

BUNDLED = Path(__file__).parent / "banks" / "conceptworld.yaml"
KINDS = ("adjective", "context")
VOCABULARY_KEYS = {"prefix", "generic", "pairs", "negation", "groups", "distractors"}


@dataclass(frozen=True)
class Group:
    """One group of mutually exclusive values: ``values`` term -> phrase."""
    name: str
    kind: str
    values: dict[str, str]
    distractor: bool = False

    @property
    def negatable(self) -> bool:
        return not self.distractor and len(self.values) >= 3


@dataclass(frozen=True)
class Vocabulary:
    groups: tuple[Group, ...]
    prefix: str = "a photo of"
    generic: str = "object"
    pairs: bool = True
    negation: dict[str, str] = field(default_factory=lambda: {"adjective": "that is not {}", "context": "not {}"})

    @classmethod
    def load(cls, path: str | Path | None = None) -> "Vocabulary":
        """A vocabulary YAML or the name of a bundled one (``conceptworld``, ``conceptworld-user``; None: the bundled
        ConceptWorld one); ValueError naming the key that is wrong."""
        path = Path(path) if path else BUNDLED
        if not path.suffix and (BUNDLED.parent / f"{path}.yaml").is_file():
            path = BUNDLED.parent / f"{path}.yaml"
        if not path.is_file():
            bundled = sorted(p.stem for p in BUNDLED.parent.glob("*.yaml"))
            raise FileNotFoundError(f"sentence bank {path} does not exist and is no bundled bank {bundled} (explain.bank)")
        raw = yaml.safe_load(path.read_text()) or {}
        unknown = sorted(set(raw) - VOCABULARY_KEYS)
        if unknown:
            raise ValueError(f"{path}: unknown key(s) {unknown}; expected {sorted(VOCABULARY_KEYS)}")
        groups = [_group(path, name, spec, False) for name, spec in (raw.get("groups") or {}).items()]
        groups += [_group(path, name, spec, True) for name, spec in (raw.get("distractors") or {}).items()]
        if not groups:
            raise ValueError(f"{path}: no groups: a bank needs at least one group of values")
        names = [g.name for g in groups]
        if len(set(names)) != len(names):
            raise ValueError(f"{path}: a group name is used twice in groups and distractors: {names}")
        negation = {**cls.__dataclass_fields__["negation"].default_factory(), **(raw.get("negation") or {})}
        bad = sorted(k for k, v in negation.items() if k not in KINDS or "{}" not in str(v))
        if bad:
            raise ValueError(f"{path}: negation.{bad[0]}: keys are {list(KINDS)}, each a phrase with {{}}")
        return cls(tuple(groups), str(raw.get("prefix", "a photo of")), str(raw.get("generic", "object")),
                   bool(raw.get("pairs", True)), negation)


def _group(path: Path, name: str, spec, distractor: bool) -> Group:
    where = f"{path}: {'distractors' if distractor else 'groups'}.{name}"
    if not isinstance(spec, dict) or spec.get("kind") not in KINDS or not isinstance(spec.get("values"), dict) \
            or not spec["values"] or set(spec) - {"kind", "values"}:
        raise ValueError(f"{where}: expected {{kind: adjective|context, values: {{term: phrase, ...}}}}")
    return Group(str(name), spec["kind"], {str(k): str(v) for k, v in spec["values"].items()}, distractor)


@dataclass(frozen=True)
class Term:
    group: Group
    value: str
    negated: bool = False

    @property
    def id(self) -> str:
        return f"{self.group.name}{'!=' if self.negated else '='}{self.value}"


@dataclass
class SentenceBank:
    """M sentences. ``texts``; ``objects``: the class each names, None for the generic word; ``terms``: term ids;
    ``distractor``: ``bool (M,)``, names a distractor value; ``parents``: indices of the sentences with one term
    left out; ``base``: ``int64 (M,)`` index of the object-alone sentence; ``negations``: ``(sentence, parent,
    positive)`` index triples, embedded by reflection."""
    texts: list[str]
    objects: list[Optional[str]]
    terms: list[tuple[str, ...]]
    distractor: np.ndarray
    parents: list[tuple[int, ...]]
    base: np.ndarray
    negations: list[tuple[int, int, int]]

    def __len__(self) -> int:
        return len(self.texts)

    def plain(self) -> list[int]:
        """The sentences the text tower embeds: all but the negations."""
        negated = {s for s, _, _ in self.negations}
        return [i for i in range(len(self)) if i not in negated]

    def digest(self) -> str:
        """A hash of every sentence and how it is composed: the embedding cache key (with the VLM's)."""
        blob = "\n".join(self.texts) + repr(self.negations)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _sentence(vocab: Vocabulary, obj: str, terms: Sequence[Term]) -> str:
    order = {g.name: i for i, g in enumerate(vocab.groups)}
    terms = sorted(terms, key=lambda t: order[t.group.name])
    adjectives = [t.group.values[t.value] for t in terms if t.group.kind == "adjective" and not t.negated]
    context = [(vocab.negation["context"].format(t.group.values[t.value]) if t.negated else t.group.values[t.value])
               for t in terms if t.group.kind == "context"]
    context += [vocab.negation["adjective"].format(t.group.values[t.value]) for t in terms
                if t.group.kind == "adjective" and t.negated]
    noun = " ".join(adjectives + [obj])
    article = "an" if noun[0].lower() in "aeiou" else "a"
    return " ".join([f"{vocab.prefix} {article} {noun}".strip()] + context)


def _term_sets(vocab: Vocabulary) -> list[tuple[Term, ...]]:
    """Every term combination of one object: none, singles, pairs of two groups (at most one negation)."""
    singles = [Term(g, v) for g in vocab.groups for v in g.values]
    negated = [Term(g, v, True) for g in vocab.groups if g.negatable for v in g.values]
    sets: list[tuple[Term, ...]] = [()] + [(t,) for t in singles + negated]
    if vocab.pairs:
        for a, b in itertools.combinations(singles + negated, 2):
            if a.group.name != b.group.name and not (a.negated and b.negated):
                sets.append((a, b))
    return sets


def build_bank(vocab: Vocabulary, classes: Sequence[str]) -> SentenceBank:
    """Every sentence of ``vocab`` for each of ``classes`` and the generic object (module docstring)."""
    texts, objects, terms, distractor, parents, base, negations = [], [], [], [], [], [], []
    sets = _term_sets(vocab)
    for obj in [*classes, None]:
        index: dict[frozenset, int] = {}
        start = len(texts)
        for combo in sets:
            index[frozenset(t.id for t in combo)] = len(texts)
            texts.append(_sentence(vocab, obj or vocab.generic, combo))
            objects.append(obj)
            terms.append(tuple(t.id for t in combo))
            distractor.append(any(t.group.distractor for t in combo))
            base.append(start)
        for combo in sets:
            ids = frozenset(t.id for t in combo)
            me = index[ids]
            parents.append(tuple(index[ids - {t.id}] for t in combo))
            for t in combo:
                if t.negated:
                    positive = (ids - {t.id}) | {Term(t.group, t.value).id}
                    negations.append((me, index[ids - {t.id}], index[positive]))
    return SentenceBank(texts, objects, terms, np.array(distractor, bool), parents, np.array(base, np.int64),
                        negations)


def embed_bank(bank: SentenceBank, encode: Callable[[list[str]], np.ndarray], batch_size: int = 512) -> np.ndarray:
    """L2-normalised embeddings ``float32 (M, E)``: ``encode`` (texts -> ``(n, E)``) on every sentence without a
    negation, in batches, then each negation by reflection (module docstring)."""
    plain = bank.plain()
    first = encode([bank.texts[plain[0]]])
    out = np.zeros((len(bank), first.shape[1]), np.float32)
    for i in range(0, len(plain), batch_size):
        chunk = plain[i:i + batch_size]
        out[chunk] = encode([bank.texts[j] for j in chunk])
    return compose_negations(bank, out)


def compose_negations(bank: SentenceBank, embeddings: np.ndarray) -> np.ndarray:
    """``embeddings`` with each negation's row set by reflection of its positive through its parent."""
    for s, parent, positive in bank.negations:
        v = 2 * embeddings[parent] - embeddings[positive]
        embeddings[s] = v / max(float(np.linalg.norm(v)), 1e-12)
    return embeddings
