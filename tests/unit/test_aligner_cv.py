"""The aligner's statistics add and subtract, and its cross-validated R² equals the one computed directly."""
import numpy as np
import pytest

from conceptlens.semantic.aligner import AlignerFit, cross_validated_r2


def data(n=600, d=12, e=6, noise=0.5, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, d)) + 3  # off-centre, as encoder features are
    return z, z @ rng.normal(size=(d, e)) + rng.normal(size=e) + noise * rng.normal(size=(n, e))


def fitted(z, e):
    fit = AlignerFit()
    fit.update(z, e)
    return fit


def ridge_direct(z, e, ridge):
    """The ridge solution written out (centred data, penalty relative to the mean feature variance)."""
    zc, ec = z - z.mean(0), e - e.mean(0)
    czz = zc.T @ zc
    W = np.linalg.solve(czz + ridge * np.trace(czz) / len(czz) * np.eye(len(czz)), zc.T @ ec)
    return W, e.mean(0) - z.mean(0) @ W


def test_fits_add_and_subtract_like_the_rows_they_describe():
    z, e = data()
    a, b, both = fitted(z[:250], e[:250]), fitted(z[250:], e[250:]), fitted(z, e)
    for combined, expected in ((a + b, both), (both - b, a), (AlignerFit() + a, a), (a - AlignerFit(), a)):
        assert combined.n == expected.n
        for name in ("zz", "ze", "z_sum", "e_sum", "ee"):
            assert np.allclose(getattr(combined, name), getattr(expected, name)), name
    assert a.zz is not (AlignerFit() + a).zz  # a copy, not a view
    with pytest.raises(ValueError, match="empty"):
        AlignerFit() - a


def test_squared_error_from_statistics_matches_the_rows():
    z, e = data()
    aligner = fitted(z[:400], e[:400]).solve(0.01)
    rest = fitted(z[400:], e[400:])
    assert rest.squared_error(aligner) == pytest.approx(((aligner(z[400:]) - e[400:]) ** 2).sum(), rel=1e-5)
    assert rest.total_variation() == pytest.approx(((e[400:] - e[400:].mean(0)) ** 2).sum(), rel=1e-9)


@pytest.mark.parametrize("ridge", [1e-3, 0.5])
def test_cross_validated_r2_matches_a_direct_k_fold(ridge):
    z, e = data(n=503)  # folds of unequal size
    fold = np.arange(len(z)) % 5
    folds = [fitted(z[fold == k], e[fold == k]) for k in range(5)]
    error = 0.0
    for k in range(5):
        W, b = ridge_direct(z[fold != k], e[fold != k], ridge)
        error += ((z[fold == k] @ W + b - e[fold == k]) ** 2).sum()
    direct = 1 - error / ((e - e.mean(0)) ** 2).sum()
    assert cross_validated_r2(folds, ridge) == pytest.approx(direct, abs=1e-8)
    in_sample = sum(folds[1:], folds[0]).solve(ridge).r2
    assert direct < in_sample  # held-out rows are predicted worse than the rows the map saw


def test_cross_validation_needs_two_usable_folds():
    z, e = data(n=3)
    assert np.isnan(cross_validated_r2([fitted(z, e), AlignerFit()]))
