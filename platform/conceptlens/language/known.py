"""Which words of a sentence bank the VLM knows: the sentences the trust check of :mod:`conceptlens.semantic.trust`
reads for each term.

A term the VLM never learnt ("stripy" to a CLIP whose captions never said a pattern) still moves its sentence's
embedding, so a sentence naming it can rank first and even validate (its retrieved rows are whatever the rest of
the sentence retrieves). The term's generic one-term sentence ("a picture of a stripy shape") plays the concept,
the bare object ("a picture of a shape") the absence prompt; a term the check does not back is never shown.
"""
from __future__ import annotations

from typing import Iterable

from conceptlens.language.bank import SentenceBank


def term_sentences(bank: SentenceBank) -> tuple[dict[str, int], int | None]:
    """Each plain term's generic one-term sentence (its index in the bank) and the generic bare-object sentence's
    (None when the bank has none)."""
    single = {bank.terms[i][0]: i for i in range(len(bank)) if bank.objects[i] is None and len(bank.terms[i]) == 1
              and "!=" not in bank.terms[i][0]}
    bare = next((i for i in range(len(bank)) if bank.objects[i] is None and not bank.terms[i]), None)
    return single, bare


def names_unknown(terms: Iterable[str], unknown: set[str]) -> bool:
    """Whether a sentence's ``terms`` name an ``unknown`` term, or its negation (``weather!=fog``)."""
    return any(t.replace("!=", "=", 1) in unknown for t in terms)
