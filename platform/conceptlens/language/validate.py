"""Checking sentences on rows that did not pick them, and the LBEE paper's metrics.

**Retrieval.** A sentence describes the rows most similar to it among its *scope*: the rows of the class it names
(all rows for the generic object), top ``share`` of them by the similarity relative to the object alone
(``sim(x, s) − sim(x, object(s))``, what the words add: within a scope the object is given; the object-alone
sentence itself by its plain similarity). Its retrieved error rate is compared with the rest of
its scope: the model's error rate must be higher there, or the sentence is not a failure mode.

**Validation** (:func:`validate`): Wilson interval of the retrieved error rate, one-sided Fisher exact test
(retrieved vs rest of the scope), Benjamini-Hochberg over every sentence tested; *validated* when ``q <= alpha``
and the retrieved rate is the higher. A cluster's failure mode is its best validated sentence; the other
validated ones are alternatives.

**Metrics** (our reading of the paper's, :func:`lbee_metrics`): the reference set ``S*_β`` holds the sentences
whose retrieved error rate is at least ``β`` times their scope's; ``P_c`` is a method's top ``K`` sentences for
hard cluster ``c``, ``P`` their union; ``U`` the sentences naming an object some cluster may name (its classes,
or the generic object), ``S = S*_β ∩ U``:

* AHR (average hit ratio): mean over clusters of ``|P_c ∩ S*_β| / |P_c|``;
* ACR (average coverage ratio): share of clusters with at least one sentence in ``S*_β``;
* TPR (true-positive rate): ``|P ∩ S| / |S|``, how much of the reference set the method finds;
* JI (Jaccard index): ``|P ∩ S| / |P ∪ S|``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from scipy import stats

from conceptlens.language.bank import SentenceBank
from conceptlens.pipeline.stats import bh_qvalues, wilson


@dataclass
class Retrieval:
    """Per sentence (``(M,)`` arrays): rows retrieved and their errors, and the same for the rest of the scope."""
    retrieved: np.ndarray
    errors: np.ndarray
    rest: np.ndarray
    rest_errors: np.ndarray

    @property
    def rate(self) -> np.ndarray:
        return self.errors / np.maximum(self.retrieved, 1)

    @property
    def rest_rate(self) -> np.ndarray:
        return self.rest_errors / np.maximum(self.rest, 1)

    @property
    def scope_rate(self) -> np.ndarray:
        return (self.errors + self.rest_errors) / np.maximum(self.retrieved + self.rest, 1)


def retrieve(sims: np.ndarray, wrong: np.ndarray, row_objects: Sequence, bank: SentenceBank, share: float,
             sentences: Optional[np.ndarray] = None) -> Retrieval:
    """Retrieval statistics of ``sentences`` (indices; None: all) from rows with similarities ``sims`` ``(N, M)``,
    errors ``wrong`` ``bool (N,)`` and classes ``row_objects`` (N,), each sentence within its scope."""
    sentences = np.arange(len(bank)) if sentences is None else np.asarray(sentences, np.int64)
    row_objects, wrong = np.asarray(row_objects, object), np.asarray(wrong, bool)
    out = {name: np.zeros(len(sentences), np.int64) for name in ("retrieved", "errors", "rest", "rest_errors")}
    objects = np.array([bank.objects[s] for s in sentences], object)
    for obj in set(objects.tolist()):
        cols = np.flatnonzero(objects == obj)
        scope = np.arange(len(wrong)) if obj is None else np.flatnonzero(row_objects == obj)
        if len(scope) == 0:
            continue
        k = max(1, int(round(share * len(scope))))
        block = _relative(sims, scope, sentences[cols], bank)
        top = np.argpartition(-block, k - 1, axis=0)[:k] if k < len(scope) else np.tile(
            np.arange(len(scope))[:, None], (1, len(cols)))
        errors = wrong[scope][top].sum(0)
        out["retrieved"][cols], out["errors"][cols] = top.shape[0], errors
        out["rest"][cols], out["rest_errors"][cols] = len(scope) - top.shape[0], int(wrong[scope].sum()) - errors
    return Retrieval(**out)


def _greater(e: int, n: int, re: int, rn: int) -> float:
    """One-sided Fisher p that ``e / n`` exceeds ``re / rn`` (NaN when a side is empty)."""
    return stats.fisher_exact([[e, n - e], [re, rn - re]], alternative="greater")[1] if n and rn else np.nan


def _relative(sims: np.ndarray, scope: np.ndarray, sentences: np.ndarray, bank: SentenceBank) -> np.ndarray:
    """``(len(scope), len(sentences))`` similarities relative to each sentence's object alone (plain for it)."""
    base = bank.base[sentences]
    block = sims[np.ix_(scope, sentences)]
    return np.where(base == sentences, block, block - sims[np.ix_(scope, base)])


def retrieved_rows(sims: np.ndarray, row_objects: Sequence, bank: SentenceBank, sentence: int, share: float
                   ) -> np.ndarray:
    """The rows (indices into ``sims``) ``sentence`` retrieves, most similar first (module docstring)."""
    row_objects = np.asarray(row_objects, object)
    obj = bank.objects[sentence]
    scope = np.arange(len(row_objects)) if obj is None else np.flatnonzero(row_objects == obj)
    k = max(1, int(round(share * len(scope))))
    score = _relative(sims, scope, np.array([sentence]), bank)[:, 0]
    return scope[np.argsort(-score, kind="stable")[:k]]


def validate(r: Retrieval, alpha: float) -> dict[str, np.ndarray]:
    """``low``/``high`` (Wilson 95 % of the retrieved error rate), ``p`` (one-sided Fisher), ``q`` (BH over
    all of ``r``'s sentences) and ``validated``."""
    p = np.array([_greater(*x) for x in zip(r.errors, r.retrieved, r.rest_errors, r.rest)])
    q = bh_qvalues(p)
    low, high = wilson(r.errors.astype(np.float64), r.retrieved.astype(np.float64))
    validated = (np.nan_to_num(q, nan=1.0) <= alpha) & (r.rate > r.rest_rate)
    return {"low": low, "high": high, "p": p, "q": q, "validated": validated}


def reference_set(r: Retrieval, beta: float) -> np.ndarray:
    """``bool (M,)``: ``S*_β``, the sentences whose retrieved error rate is at least ``β`` times their scope's
    (and above zero)."""
    return (r.errors > 0) & (r.rate >= beta * r.scope_rate)


def lbee_metrics(predicted: Sequence[Sequence[int]], reference: np.ndarray, universe: np.ndarray) -> dict:
    """AHR, ACR, TPR, JI (module docstring) of per-cluster predicted sentence lists against ``reference``
    (``bool (M,)``), the reference restricted to ``universe`` (``bool (M,)``) for TPR and JI."""
    lists = [np.asarray(p, np.int64) for p in predicted if len(p)]
    if not lists:
        return {"ahr": None, "acr": None, "tpr": None, "ji": None}
    hits = [reference[p] for p in lists]
    union = set(np.concatenate(lists).tolist())
    relevant = set(np.flatnonzero(reference & universe).tolist())
    found = len(union & relevant)
    return {"ahr": float(np.mean([h.mean() for h in hits])), "acr": float(np.mean([h.any() for h in hits])),
            "tpr": found / len(relevant) if relevant else None,
            "ji": found / len(union | relevant) if union | relevant else None}
