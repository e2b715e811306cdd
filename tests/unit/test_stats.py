"""The shared statistics (conceptlens.pipeline.stats) against textbook values."""
import numpy as np
import pytest

from conceptlens.pipeline.stats import bh_qvalues, wilson


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
