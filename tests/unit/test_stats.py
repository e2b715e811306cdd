"""The shared statistics (conceptlens.pipeline.stats) against textbook values."""
import numpy as np
import pytest

from conceptlens.pipeline.stats import bh_qvalues, delong, mcnemar_paired, wilson


def test_benjamini_hochberg_matches_the_textbook_procedure():
    p = np.array([0.01, 0.04, 0.03, 0.005, np.nan, 0.5])
    q = bh_qvalues(p)
    # sorted p: 0.005 0.01 0.03 0.04 0.5 (m = 5, the NaN is not a test) -> 0.025 0.025 0.05 0.05 0.5
    assert np.allclose(q[[3, 0, 2, 1, 5]], [0.025, 0.025, 0.05, 0.05, 0.5]) and np.isnan(q[4])
    assert bh_qvalues(p.reshape(2, 3)).shape == (2, 3)
    assert np.isnan(bh_qvalues(np.array([np.nan, np.inf]))).all()


def test_wilson_matches_the_textbook_and_holds_the_observed_share():
    low, high = wilson(50, 100)
    assert (float(low), float(high)) == pytest.approx((0.40383, 0.59617), abs=1e-5)  # the textbook 50/100
    successes, n = np.array([0.0, 5.0, 10.0, 0.0]), np.array([10.0, 10.0, 10.0, 0.0])
    low, high = wilson(successes, n)
    share = successes[:3] / n[:3]
    assert np.all(low[:3] <= share) and np.all(share <= high[:3]) and low[0] == 0 and high[2] == 1
    assert high[0] == pytest.approx(0.27753, abs=1e-5)  # no success seen: still an upper bound
    assert low[1] == pytest.approx(0.23659, abs=1e-5)
    assert np.isnan(low[3]) and np.isnan(high[3])  # no rows: no interval
    assert wilson(5, 10, 0.99)[0] < wilson(5, 10, 0.95)[0]  # a higher confidence, a wider interval
    with pytest.raises(ValueError, match="confidence"):
        wilson(5, 10, 1.0)


def test_mcnemar_counts_only_the_discordant_rows():
    a = np.array([True] * 80 + [False] * 20)
    b = a.copy()
    b[:5] = False  # b loses 5 rows a got right
    b[80:100] = True  # and gains 20 a got wrong
    r = mcnemar_paired(a, b)
    assert (r["a_only"], r["b_only"], r["n"]) == (5, 20, 100)
    assert r["difference"] == pytest.approx(0.15) and r["low"] < 0.15 < r["high"] and r["low"] > 0
    assert r["p"] == pytest.approx(0.005110, rel=1e-3)  # χ² = (|5 - 20| - 1)² / 25 = 7.84, corrected, 1 df
    assert mcnemar_paired(a[:90], b[:90])["p"] == pytest.approx(0.30176, rel=1e-3)  # 5 + 10 discordant: exact binomial
    same = mcnemar_paired(a, a)
    assert same["p"] == 1.0 and same["difference"] == 0
    with pytest.raises(ValueError, match="same rows"):
        mcnemar_paired(a, b[:50])


def test_delong_matches_the_mann_whitney_auroc_and_knows_a_paired_difference():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.random(400) < 0.3
    noise = rng.normal(size=400)
    weak, strong = y + 2.0 * noise, y + 0.5 * noise
    one = delong(y, weak)
    assert one["auroc"] == pytest.approx(roc_auc_score(y, weak)) and one["low"] < one["auroc"] < one["high"]
    paired = delong(y, weak, strong)
    assert paired["difference"] == pytest.approx(roc_auc_score(y, strong) - roc_auc_score(y, weak))
    assert paired["low"] > 0 and paired["p"] < 1e-3
    # the same score twice: no difference, however the rows fall
    assert delong(y, weak, weak)["difference"] == 0 and delong(y, weak, weak)["p"] == 1.0
    # paired beats unpaired: the shared noise cancels, so the paired interval is narrower than the two SEs added
    assert paired["se"] < np.hypot(delong(y, weak)["se"], delong(y, strong)["se"])
    with pytest.raises(ValueError, match="positives and negatives"):
        delong(np.ones(4, bool), np.arange(4.0))
