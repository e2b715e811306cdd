"""The statistics the wings share, each written once and taken from statsmodels where it has it: Wilson score
intervals of proportions and Benjamini–Hochberg q-values."""
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


def bh_qvalues(p) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values) of the finite entries of ``p``, NaN where ``p`` is not
    finite (those are not counted as tests); same shape as ``p``."""
    from statsmodels.stats.multitest import multipletests

    flat = np.asarray(p, np.float64).ravel()
    q = np.full(flat.shape, np.nan)
    ok = np.isfinite(flat)
    if ok.any():
        q[ok] = multipletests(flat[ok], method="fdr_bh")[1]
    return q.reshape(np.shape(p))
