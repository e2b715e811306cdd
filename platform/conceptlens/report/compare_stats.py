"""Intervals and the significance rule of ``conceptlens compare``.

Every number compared is an :func:`estimate` ``{"value", "low", "high", "n"}`` (``low``/``high`` None when the
run's outputs carry no counts to build an interval from). :func:`change` compares two of them: the delta B − A,
an interval on the delta, and ``significant`` — true only when both runs have an interval and the two
intervals do not overlap (a conservative rule: overlapping 95 % intervals can still differ at 5 %, but a
change called significant here is one no reader will argue with).

* accuracies (a share of ``n`` rows): Wilson score intervals; the delta's interval is Newcombe's hybrid score
  interval built from the two Wilson intervals;
* AUROCs with ``n_pos`` positives and ``n_neg`` negatives: Hanley & McNeil (1982) standard error, a normal
  interval clipped to [0, 1]; the delta's interval from the two standard errors (independent samples);
* anything else (a threshold, an AUROC without counts): no interval, never significant.

That rule is for runs that share no rows. Where they do (the same images), :mod:`.compare_paired` tests the
difference on the shared rows instead (McNemar, DeLong) and calls it significant when the interval on the
difference excludes 0 (:func:`paired_change`). Every change says which test made it: ``test`` (``wilson``,
``hanley-mcneil``, ``risk-ratio`` for analyze's log risk-ratio intervals; ``mcnemar``, ``delong`` paired) and
``paired``.
"""
from __future__ import annotations

import math
from statistics import NormalDist

from conceptlens.pipeline.stats import wilson

NO_INTERVAL = "no interval"
UNPAIRED_TESTS = {"share": "wilson", "auroc": "hanley-mcneil", "log_risk_ratio": "risk-ratio"}  # by estimate kind


def z_value(confidence: float) -> float:
    """The two-sided normal quantile of ``confidence`` (1.96 for 0.95); ValueError outside (0, 1)."""
    if not 0 < confidence < 1:
        raise ValueError(f"compare.confidence={confidence}: must lie strictly between 0 and 1")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def hanley_mcneil_se(auroc: float, n_pos: int, n_neg: int) -> float:
    """Standard error of an AUROC from ``n_pos`` positives and ``n_neg`` negatives (Hanley & McNeil 1982)."""
    if n_pos <= 0 or n_neg <= 0:
        raise ValueError(f"an AUROC interval needs positives and negatives, got {n_pos} and {n_neg}")
    a = min(max(auroc, 0.0), 1.0)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg)
    return math.sqrt(max(var, 0.0))


def estimate(value, low=None, high=None, n=None, **extra) -> dict:
    """One compared number: ``{"value", "low", "high", "n", ...extra}`` (None where unknown)."""
    return {"value": value if _finite(value) else None, "low": low, "high": high, "n": n, **extra}


def share_estimate(share, n, confidence: float) -> dict:
    """An accuracy (or any share) of ``n`` rows with its Wilson interval; no interval without ``n``."""
    if not _finite(share) or not n:
        return estimate(share, n=n, kind="share")
    z_value(confidence)  # names compare.confidence when it is out of range
    low, high = (float(x) for x in wilson(min(max(share, 0.0), 1.0) * int(n), int(n), confidence))
    return estimate(share, low, high, int(n), kind="share")


def auroc_estimate(auroc, n_pos=None, n_neg=None, confidence: float = 0.95) -> dict:
    """An AUROC with its Hanley–McNeil interval when the counts are known, else without an interval."""
    if not _finite(auroc) or not n_pos or not n_neg:
        return estimate(auroc, kind="auroc")
    se = hanley_mcneil_se(auroc, int(n_pos), int(n_neg))
    z = z_value(confidence)
    return estimate(auroc, max(0.0, auroc - z * se), min(1.0, auroc + z * se), int(n_pos) + int(n_neg),
                    kind="auroc", se=se, n_pos=int(n_pos), n_neg=int(n_neg))


def has_interval(e: dict | None) -> bool:
    return bool(e) and e.get("value") is not None and e.get("low") is not None and e.get("high") is not None


def overlap(a: dict, b: dict) -> bool:
    """Whether the intervals of two estimates overlap (touching counts as overlapping)."""
    return a["low"] <= b["high"] and b["low"] <= a["high"]


def delta_interval(a: dict, b: dict, confidence: float) -> tuple[float, float] | None:
    """An interval on ``b - a``: Newcombe's hybrid score interval for two shares, the normal interval from the
    two standard errors for two AUROCs; None when either side has no interval."""
    if not (has_interval(a) and has_interval(b)):
        return None
    d = b["value"] - a["value"]
    if a.get("kind") == "auroc" and b.get("kind") == "auroc":
        half = z_value(confidence) * math.hypot(a["se"], b["se"])
        return d - half, d + half
    lower = d - math.hypot(b["value"] - b["low"], a["high"] - a["value"])
    upper = d + math.hypot(b["high"] - b["value"], a["value"] - a["low"])
    return lower, upper


def change(a: dict | None, b: dict | None, confidence: float) -> dict:
    """``{"a", "b", "delta", "delta_low", "delta_high", "significant", "note"}`` for two estimates (either may be
    None: the number exists in one run only). ``significant`` only when both intervals exist and do not
    overlap; ``note`` says why there is no verdict."""
    out = {"a": a, "b": b, "delta": None, "delta_low": None, "delta_high": None, "significant": False, "note": None,
           "test": None, "paired": False}
    have_a, have_b = bool(a) and a.get("value") is not None, bool(b) and b.get("value") is not None
    if not (have_a and have_b):
        out["note"] = "only in run A" if have_a else "only in run B" if have_b else "in neither run"
        return out
    out["delta"] = b["value"] - a["value"]
    if not (has_interval(a) and has_interval(b)):
        out["note"] = NO_INTERVAL
        return out
    out["delta_low"], out["delta_high"] = delta_interval(a, b, confidence)
    out["significant"] = not overlap(a, b)
    out["test"] = UNPAIRED_TESTS.get(a.get("kind"))
    return out


def excludes_zero(low, high) -> bool:
    """Whether an interval on a difference lies wholly above or below 0 (touching 0 does not count)."""
    return bool(_finite(low) and _finite(high) and (low > 0 or high < 0))


def paired_change(a: dict, b: dict, test: dict, rows: int, **extra) -> dict:
    """A :func:`change` of two estimates made on the same ``rows`` from a paired ``test`` (``mcnemar_paired`` or
    a paired ``delong`` of :mod:`conceptlens.pipeline.stats`): the delta, its interval and ``p`` from the test,
    ``significant`` when that interval excludes 0."""
    return {"a": a, "b": b, "delta": test["difference"], "delta_low": test["low"], "delta_high": test["high"],
            "significant": excludes_zero(test["low"], test["high"]), "note": None, "test": test["test"],
            "paired": True, "rows_paired": int(rows), "p": test["p"], **extra}


def direction(c: dict) -> str:
    """``up`` / ``down`` / ``same`` (or ``–`` without a delta) of a :func:`change`."""
    if c.get("delta") is None:
        return "–"
    return "up" if c["delta"] > 0 else "down" if c["delta"] < 0 else "same"
