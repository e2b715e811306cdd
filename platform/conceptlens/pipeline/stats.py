"""The statistics the wings share, each written once and taken from statsmodels where it has it: Wilson score
intervals of proportions, Benjamini–Hochberg q-values, McNemar on paired accuracies and DeLong on (paired) AUROCs
(statsmodels has no DeLong: written here, checked against the Mann–Whitney AUROC), and accuracy as skill over chance."""
from __future__ import annotations

import numpy as np


def wilson(successes, n, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval ``(low, high)`` of ``successes / n`` (arrays or scalars, broadcast), at the two-sided
    ``confidence``; NaN where ``n`` is 0. The interval always holds the observed share (exactly, at 0 and 1)."""
    from statsmodels.stats.proportion import proportion_confint

    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence}: must lie strictly between 0 and 1")
    successes, n = np.broadcast_arrays(np.asarray(successes, np.float64), np.asarray(n, np.float64))
    low, high = np.full(n.shape, np.nan), np.full(n.shape, np.nan)
    some = n > 0
    if some.any():
        lo, hi = proportion_confint(successes[some], n[some], alpha=1 - confidence, method="wilson")
        share = successes[some] / n[some]
        low[some], high[some] = np.clip(np.minimum(lo, share), 0, 1), np.clip(np.maximum(hi, share), 0, 1)
    return low, high


def bh_qvalues(p, same_as: dict[int, int] | None = None) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values) of the finite entries of ``p``, NaN where ``p`` is not
    finite (those are not counted as tests); same shape as ``p``. ``same_as`` (for a 2-d ``p``): column -> column
    whose test it repeats (the second value of a two-valued group is the first's absence: one finding, one test);
    such a column is not counted and takes the other's q."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p, np.float64)
    if same_as:
        p = p.copy()
        p[:, list(same_as)] = np.nan
    flat = p.ravel()
    q = np.full(flat.shape, np.nan)
    ok = np.isfinite(flat)
    if ok.any():
        q[ok] = multipletests(flat[ok], method="fdr_bh")[1]
    q = q.reshape(p.shape)
    for column, first in (same_as or {}).items():
        q[:, column] = q[:, first]
    return q


def mcnemar_paired(a_correct, b_correct, confidence: float = 0.95) -> dict:
    """Accuracy of two models on the same rows: McNemar's test (exact binomial on the discordant rows below 25 of
    them, the continuity-corrected χ² above) and the interval on the difference ``accuracy_b - accuracy_a`` (Wald
    on paired proportions). ``a_correct``, ``b_correct``: (N,) bool per shared row."""
    from scipy.stats import norm
    from statsmodels.stats.contingency_tables import mcnemar

    a, b = np.asarray(a_correct, bool), np.asarray(b_correct, bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"mcnemar_paired needs two (N,) arrays over the same rows; got {a.shape} and {b.shape}")
    n, a_only, b_only = len(a), int((a & ~b).sum()), int((~a & b).sum())
    discordant = a_only + b_only
    p = 1.0 if discordant == 0 else float(mcnemar([[int((a & b).sum()), a_only], [b_only, int((~a & ~b).sum())]],
                                                  exact=discordant < 25, correction=True).pvalue)
    diff = (b_only - a_only) / n if n else float("nan")
    se = np.sqrt(max(discordant - (b_only - a_only) ** 2 / n, 0.0)) / n if n else float("nan")
    z = norm.ppf(0.5 + confidence / 2)
    return {"test": "mcnemar", "n": n, "a": float(a.mean()) if n else None, "b": float(b.mean()) if n else None,
            "a_only": a_only, "b_only": b_only, "difference": diff, "low": diff - z * se, "high": diff + z * se,
            "p": p}


def _midrank_components(positives: np.ndarray, negatives: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """DeLong's structural components of one score: the AUROC and the placement values of each positive (V10)
    and each negative (V01), from midranks (ties count one half)."""
    from scipy.stats import rankdata

    m, n = len(positives), len(negatives)
    joint = rankdata(np.concatenate([positives, negatives]))
    v10 = (joint[:m] - rankdata(positives)) / n
    v01 = 1.0 - (joint[m:] - rankdata(negatives)) / m
    return float(v10.mean()), v10, v01


def delong(labels, score_a, score_b=None, confidence: float = 0.95) -> dict:
    """DeLong's AUROC with its standard error and interval; given ``score_b`` on the same rows, the paired test of
    ``auroc_b - auroc_a`` (the two scores' covariance counted) with the interval on the difference. ``labels``:
    (N,) bool, True for the positives (the rows a detector should flag)."""
    from scipy.stats import norm

    y = np.asarray(labels, bool)
    if y.all() or not y.any():
        raise ValueError("delong needs positives and negatives among the labels")
    z = norm.ppf(0.5 + confidence / 2)
    parts = [_midrank_components(np.asarray(s, np.float64)[y], np.asarray(s, np.float64)[~y])
             for s in ((score_a,) if score_b is None else (score_a, score_b))]
    aucs = np.array([p[0] for p in parts])
    s10 = np.atleast_2d(np.cov(np.stack([p[1] for p in parts])))
    s01 = np.atleast_2d(np.cov(np.stack([p[2] for p in parts])))
    cov = s10 / y.sum() + s01 / (~y).sum()
    if score_b is None:
        se = float(np.sqrt(cov[0, 0]))
        return {"test": "delong", "auroc": float(aucs[0]), "se": se, "low": aucs[0] - z * se, "high": aucs[0] + z * se}
    diff, var = float(aucs[1] - aucs[0]), float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    se = np.sqrt(max(var, 0.0))
    p = float(2 * norm.sf(abs(diff) / se)) if se > 0 else (1.0 if diff == 0 else 0.0)
    return {"test": "delong", "a": float(aucs[0]), "b": float(aucs[1]), "difference": diff, "se": float(se),
            "low": diff - z * se, "high": diff + z * se, "p": p}


def skill(accuracy: float, classes: int) -> float:
    """Accuracy rescaled so that chance (``1/classes``) is 0 and perfect is 1: ``(acc − 1/K) / (1 − 1/K)``."""
    chance = 1.0 / classes
    return (accuracy - chance) / (1.0 - chance)
