"""Paired statistics for ``conceptlens compare`` where the two runs scored the same images.

Two runs on one test set (a repaired head against its base, on the same rows) give paired data: testing their
accuracies as two independent samples (do the Wilson intervals overlap?) throws away the pairing and misses real
changes. Here:

* :func:`pair_rows` finds the rows that are the same image in both runs (``embed``'s ``predictions.parquet``):
  equal id, equal label, and equal image content digest (equal path where either run has no digest). An id alone
  is not enough: ConceptWorld's ``test-000001`` is another image in every world seed.
* :func:`paired_accuracy`: McNemar's test on the shared rows, the interval on the accuracy difference;
* :func:`paired_auroc`: DeLong's paired test of the runtime filter's misclassification AUROC (``evaluate``'s
  per-row ``filter_scores.parquet``) — only where the two runs' errors are the same rows (one set of labels).

Each returns a :func:`~conceptlens.report.compare_stats.paired_change`: significant when the interval on the
difference excludes 0. The runs are paired when the same images make up at least :data:`MIN_SHARE` of the
smaller run's rows; otherwise compare falls back to its unpaired rules. Ground truth is never read: per planted
slice (slice membership is truth) the accuracies stay unpaired.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from conceptlens.pipeline.stats import delong, mcnemar_paired
from conceptlens.report.compare_runs import RunOutputs
from conceptlens.report.compare_stats import estimate, paired_change, share_estimate

PREDICTIONS, FILTER_SCORES = "embed/predictions.parquet", "evaluate/filter_scores.parquet"
MIN_SHARE = 0.5  # of the smaller run's rows that must be the same images for a paired comparison


@dataclass
class Pairing:
    """The rows two runs share: ``ia`` / ``ib`` (positions in each run's predictions table, row k of one is row k
    of the other) and ``summary`` (JSON-ready: ``paired``, ``why`` when not, the counts, ``by``)."""
    summary: dict
    ia: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    ib: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def paired(self) -> bool:
        return bool(self.summary["paired"])


def pair_rows(a, b, min_share: float = MIN_SHARE) -> Pairing:
    """The rows of two predictions tables (``id, path, digest, label``; Arrow tables or dicts of lists) that are
    the same images; ``summary``: ``rows`` (each run's), ``ids_shared``, ``same_images``, ``different_images``,
    ``by`` (how sameness was checked: ``digest`` / ``path`` counts), ``paired`` and ``why``."""
    a, b = (t.to_pydict() if hasattr(t, "to_pydict") else t for t in (a, b))
    where_b = {row_id: j for j, row_id in enumerate(b["id"])}
    ia, ib, by = [], [], {"digest": 0, "path": 0}
    shared = 0
    for i, row_id in enumerate(a["id"]):
        j = where_b.get(row_id)
        if j is None:
            continue
        shared += 1
        da, db = a["digest"][i], b["digest"][j]
        how = "digest" if da and db else "path"
        same = (da == db if how == "digest" else a["path"][i] == b["path"][j]) and a["label"][i] == b["label"][j]
        if same:
            ia.append(i)
            ib.append(j)
            by[how] += 1
    rows = [len(a["id"]), len(b["id"])]
    summary = {"rows": rows, "ids_shared": shared, "same_images": len(ia), "different_images": shared - len(ia),
               "by": by, "min_share": min_share}
    smaller = min(rows)
    if not ia:
        why = ("the runs share no row ids" if not shared else
               f"{shared} ids are shared but none is the same image (content digest or path): another dataset or "
               f"world seed")
    elif len(ia) < min_share * smaller:
        why = f"only {len(ia)} of the smaller run's {smaller} rows are the same images (under {min_share:.0%})"
    else:
        why = None
    return Pairing(summary | {"paired": why is None, "why": why}, np.asarray(ia, np.int64), np.asarray(ib, np.int64))


def predictions_of(o: RunOutputs):
    """The run's per-row predictions (``embed/predictions.parquet``, an Arrow table), or None."""
    return o.parquet(PREDICTIONS)


def pairing(a: RunOutputs, b: RunOutputs) -> Pairing:
    """:func:`pair_rows` of two runs' ``embed/predictions.parquet``; not paired (and why) where one lacks it."""
    tables = [predictions_of(o) for o in (a, b)]
    missing = [o.ref.name for o, t in zip((a, b), tables) if t is None]
    if missing:
        return Pairing({"paired": False, "why": f"no per-row predictions ({PREDICTIONS}) in run "
                                                f"{' and '.join(map(repr, missing))} (`conceptlens embed` logs them)"})
    return pair_rows(*tables)


def _correct(o: RunOutputs, rows: np.ndarray) -> np.ndarray:
    """Whether each of ``rows`` (positions in the run's predictions) is classified right, in the run's own class
    order (``label_index`` may differ between runs; the label does not)."""
    table = predictions_of(o)
    return (table["prediction"].to_numpy() == table["label_index"].to_numpy())[rows]


def paired_accuracy(a: RunOutputs, b: RunOutputs, pairs: Pairing, confidence: float) -> dict:
    """McNemar on the shared test rows: each run's accuracy there (Wilson interval, for reading), the difference
    B − A with its interval and p, and the discordant rows."""
    ca, cb = _correct(a, pairs.ia), _correct(b, pairs.ib)
    test = mcnemar_paired(ca, cb, confidence)
    n = test["n"]
    return {"source": "embed predictions (test rows)",
            **paired_change(share_estimate(test["a"], n, confidence), share_estimate(test["b"], n, confidence), test,
                            n, discordant={"a_right_b_wrong": test["a_only"], "b_right_a_wrong": test["b_only"],
                                           "net": test["b_only"] - test["a_only"]})}


def _scores(o: RunOutputs, ids: list) -> np.ndarray | None:
    """The filter's misclassification score of each of ``ids`` in run ``o`` (NaN where it has none), or None."""
    table = o.parquet(FILTER_SCORES)
    if table is None:
        return None
    score = dict(zip(table["id"].to_pylist(), table["score"].to_numpy()))
    return np.array([score.get(i, np.nan) for i in ids], np.float64)


def paired_auroc(a: RunOutputs, b: RunOutputs, pairs: Pairing, confidence: float) -> tuple[dict | None, str]:
    """DeLong's paired test of the filter's misclassification AUROC (errors against correct rows) on the shared
    rows both runs scored: ``(change, "")``, or ``(None, why not)``."""
    ids = np.asarray(predictions_of(a)["id"].to_pylist(), object)[pairs.ia]
    sa, sb = _scores(a, list(ids)), _scores(b, list(ids))
    if sa is None or sb is None:
        return None, f"no per-row filter scores ({FILTER_SCORES}) in both runs"
    scored = np.isfinite(sa) & np.isfinite(sb)
    wrong_a, wrong_b = ~_correct(a, pairs.ia)[scored], ~_correct(b, pairs.ib)[scored]
    if not np.array_equal(wrong_a, wrong_b):
        return None, (f"the two classifiers err on different rows ({int((wrong_a != wrong_b).sum())} of "
                      f"{int(scored.sum())}): DeLong's paired test needs one set of errors")
    if wrong_a.all() or not wrong_a.any():
        return None, "the shared rows need errors and correct rows"
    sa, sb = sa[scored], sb[scored]
    n_pos, n_neg = int(wrong_a.sum()), int((~wrong_a).sum())

    def one(score: np.ndarray) -> dict:
        d = delong(wrong_a, score, confidence=confidence)
        return estimate(d["auroc"], max(0.0, d["low"]), min(1.0, d["high"]), n_pos + n_neg, kind="auroc", se=d["se"],
                        n_pos=n_pos, n_neg=n_neg)

    return paired_change(one(sa), one(sb), delong(wrong_a, sa, sb, confidence), n_pos + n_neg), ""
