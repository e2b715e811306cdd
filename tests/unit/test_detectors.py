"""The detector baselines and detection metrics on synthetic data with a known answer."""
import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from conceptlens.runtime.detectors import (BASELINES, KNN, Detector, Energy, Mahalanobis, MaxSoftmax,
                                           RelativeMahalanobis, Stacked, detection_metrics, energy_score, knn_score,
                                           mahalanobis_score, msp_score, threshold_at_fpr)


def gaussian_batch(rng, n, means, shift=0.0, scale=1.0):
    """Rows drawn around class ``means`` (C, D), optionally moved off-distribution."""
    labels = rng.integers(0, len(means), n)
    features = means[labels] + scale * rng.normal(size=(n, means.shape[1])) + shift
    logits = -((features[:, None, :] - means[None]) ** 2).sum(-1) / 2
    return {"features": features, "logits": logits, "prediction": logits.argmax(1), "label_index": labels}


@pytest.fixture
def world():
    rng = np.random.default_rng(0)
    means = 4.0 * rng.normal(size=(3, 16))
    fit = gaussian_batch(rng, 600, means)
    inside = gaussian_batch(rng, 300, means)
    outside = gaussian_batch(rng, 300, means, shift=2.0 * rng.normal(size=16), scale=1.5)
    test = {k: np.concatenate([inside[k], outside[k]]) for k in fit}
    return fit, test, np.r_[np.zeros(300, bool), np.ones(300, bool)]


@pytest.mark.parametrize("name", ["mahalanobis", "relative_mahalanobis", "knn"])
def test_feature_detectors_rank_shifted_rows_higher(world, name):
    fit, test, shifted = world
    scores = BASELINES[name]().fit(fit).score(test)
    assert scores.dtype == np.float64 and scores.shape == (600,)
    assert roc_auc_score(shifted, scores) > 0.9


def test_every_baseline_follows_the_contract(world):
    fit, test, _ = world
    assert set(BASELINES) == {"msp", "energy", "mahalanobis", "relative_mahalanobis", "knn"}
    for name, cls in BASELINES.items():
        detector = cls()
        assert isinstance(detector, Detector) and detector.name == name
        assert detector.fit(fit) is detector
        scores = detector.score(test)
        assert scores.dtype == np.float64 and scores.shape == (600,) and np.isfinite(scores).all()


def test_msp_and_energy_match_their_formulas_and_rank_low_confidence_higher():
    logits = np.array([[10.0, 0.0, 0.0], [1.0, 0.9, 0.8], [1000.0, 999.0, -5.0]])
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert np.allclose(msp_score(logits), -p.max(1))
    assert msp_score(logits)[1] > msp_score(logits)[0]  # the flat row is the suspicious one
    assert np.allclose(msp_score(logits + 50), msp_score(logits))
    assert np.allclose(MaxSoftmax().score({"logits": logits}), msp_score(logits))
    small = logits[:2]
    assert np.allclose(energy_score(small), -np.log(np.exp(small).sum(1)))
    assert np.allclose(Energy(2.0).score({"logits": small}), -2.0 * np.log(np.exp(small / 2).sum(1)))
    assert np.isfinite(energy_score(logits)).all() and energy_score(logits)[2] == pytest.approx(-1000.3133, abs=1e-3)


@pytest.mark.parametrize("scale", [0.1, 1.0, 10.0, 100.0])
def test_the_pytorch_ood_baselines_give_the_numpy_scores_the_filter_reads(scale):
    """MaxSoftmax and Energy score with pytorch-ood (MaxSoftmax, EnergyBased); the concept filter reads the NumPy
    msp_score / energy_score: the same numbers up to float64 round-off, on float32 logits too, so the same ranking
    unless confidences saturate (at scale 100 a round-off apart, many rows tie at probability 1 in one and not the
    other)."""
    logits = (np.random.default_rng(1).normal(size=(4000, 10)) * scale).astype(np.float32)
    batch = {"logits": logits}
    for ours, theirs in ((msp_score(logits), MaxSoftmax().score(batch)), (energy_score(logits), Energy().score(batch)),
                         (energy_score(logits, 2.5), Energy(2.5).score(batch))):
        assert theirs.dtype == np.float64 and theirs.shape == (4000,)
        np.testing.assert_allclose(theirs, ours, rtol=1e-12, atol=1e-12)
    wrong = np.random.default_rng(2).random(4000) < 0.3
    same = pytest.approx(roc_auc_score(wrong, msp_score(logits)), abs=0 if scale <= 10 else 1e-3)
    assert roc_auc_score(wrong, MaxSoftmax().score(batch)) == same


def test_mahalanobis_matches_the_explicit_distance_and_groups_by_true_label():
    rng = np.random.default_rng(1)
    means = np.array([[0.0, 0.0, 0.0], [5.0, 0.0, 0.0]])
    batch = gaussian_batch(rng, 400, means)
    batch["prediction"] = rng.integers(0, 2, 400)  # a useless classifier: the true labels must win
    det = Mahalanobis().fit(batch)
    assert np.allclose(det.means, [batch["features"][batch["label_index"] == c].mean(0) for c in (0, 1)])
    centred = batch["features"] - det.means[batch["label_index"]]
    inv = np.linalg.inv(centred.T @ centred / 400)
    x = rng.normal(size=(5, 3))
    explicit = np.min([np.einsum("nd,de,ne->n", x - m, inv, x - m) for m in det.means], axis=0)
    assert np.allclose(det.score({"features": x}), explicit, rtol=1e-4)
    assert np.allclose(mahalanobis_score(x, det.means, det.precision), explicit, rtol=1e-4)
    by_prediction = Mahalanobis().fit({k: v for k, v in batch.items() if k != "label_index"})
    assert np.allclose(by_prediction.means[1], batch["features"][batch["prediction"] == 1].mean(0))


def test_mahalanobis_and_knn_leave_defective_rows_out_and_survive_rank_deficiency():
    rng = np.random.default_rng(2)
    clean = rng.normal(size=(20, 50))  # D > N: a singular covariance
    features = np.r_[clean, clean[:5] + 100.0]
    batch = {"features": features, "prediction": np.zeros(25, int)}
    defective = np.r_[np.zeros(20, bool), np.ones(5, bool)]
    det = Mahalanobis().fit(batch, defective)
    assert np.allclose(det.means[0], clean.mean(0))
    assert np.isfinite(det.score(batch)).all()
    assert len(KNN().fit(batch, defective).bank) == 20
    with pytest.raises(ValueError):
        Mahalanobis().fit(batch, np.ones(25, bool))


def test_knn_matches_brute_force_in_small_chunks_and_caps_k():
    rng = np.random.default_rng(3)
    bank, queries = rng.normal(size=(40, 8)), rng.normal(size=(13, 8))
    q, b = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (queries, bank))
    dist = np.linalg.norm(q[:, None] - b[None], axis=-1)
    assert np.allclose(knn_score(queries, bank, 5, max_block=7), np.sort(dist, 1)[:, 4], atol=1e-5)
    capped = KNN(k=50, max_block=40).fit({"features": bank}).score({"features": queries})
    assert np.allclose(capped, dist.max(1), atol=1e-5)


@pytest.mark.parametrize("n", [1, 7, 100, 1003])
@pytest.mark.parametrize("fpr", [0.0, 0.01, 0.05, 0.29, 0.5])
def test_threshold_at_fpr_keeps_the_clean_false_alarm_rate(n, fpr):
    rng = np.random.default_rng(n)
    tied = rng.integers(0, 4, n).astype(float)
    assert (tied > threshold_at_fpr(tied, fpr)).mean() <= fpr
    continuous = rng.normal(size=n)  # without ties the budget is used in full
    assert (continuous > threshold_at_fpr(continuous, fpr)).sum() == math.floor(fpr * n + 1e-9)


def test_threshold_edges():
    assert threshold_at_fpr(np.array([1.0, 2.0]), 1.0) == -math.inf
    assert threshold_at_fpr(np.array([1.0, 2.0]), 0.0) == 2.0
    with pytest.raises(ValueError):
        threshold_at_fpr(np.array([]), 0.05)
    with pytest.raises(ValueError):
        threshold_at_fpr(np.array([1.0]), 1.5)


def test_detection_metrics_match_sklearn_and_give_nan_for_one_class():
    rng = np.random.default_rng(4)
    defective = rng.random(500) < 0.2
    scores = rng.normal(size=500) + 1.5 * defective
    m = detection_metrics(scores, defective, fpr=0.05)
    assert m["auroc"] == pytest.approx(roc_auc_score(defective, scores))
    assert m["aupr"] == pytest.approx(average_precision_score(defective, scores))
    threshold = np.sort(scores[~defective])[::-1][int(0.05 * (~defective).sum())]
    assert m["tpr_at_fpr"] == pytest.approx((scores[defective] > threshold).mean())
    assert (m["n"], m["n_defective"]) == (500, int(defective.sum()))
    assert 0.5 < m["auroc"] < 1 and m["aupr"] > defective.mean()
    for only in (np.zeros(10, bool), np.ones(10, bool)):
        one = detection_metrics(np.arange(10.0), only)
        assert all(math.isnan(one[k]) for k in ("auroc", "aupr", "tpr_at_fpr"))
        assert (one["n"], one["n_defective"]) == (10, int(only.sum()))


def test_relative_mahalanobis_is_the_class_distance_minus_the_background_distance():
    rng = np.random.default_rng(1)
    means = np.array([[0.0, 0.0], [4.0, 0.0]])
    fit = gaussian_batch(rng, 400, means)
    rows = gaussian_batch(rng, 5, means)
    relative = RelativeMahalanobis().fit(fit)
    x = fit["features"]
    centre = x.mean(0)
    background = np.linalg.inv(np.cov(x.T, bias=True) + 1e-6 * np.trace(np.cov(x.T, bias=True)) / 2 * np.eye(2))
    d0 = np.einsum("nd,de,ne->n", rows["features"] - centre, background, rows["features"] - centre)
    expected = mahalanobis_score(rows["features"], relative.means, relative.precision) - d0
    assert np.allclose(relative.score(rows), expected, rtol=1e-6)


class Column(Detector):
    def __init__(self, key):
        self.key = key

    def score(self, batch):
        return np.asarray(batch[self.key], np.float64)


def test_the_stacked_baseline_learns_from_labels_what_no_single_score_has():
    """Defects are the top fifth by the sum of two independent scores: only their combination ranks them; the
    stacked baseline needs labels and refuses one-class rows."""
    rng = np.random.default_rng(2)

    def batch(n):
        rows = {"a": rng.normal(size=n), "b": 3 * rng.normal(size=n)}  # scales differ: the fit standardises
        return rows, rows["a"] + rows["b"] / 3 > 1.2

    parts = {"a": Column("a"), "b": Column("b")}
    (fit, fit_truth), (test, truth) = batch(800), batch(800)
    stacked = Stacked(parts).fit(fit, fit_truth)
    assert roc_auc_score(truth, stacked.score(test)) > 0.98
    assert max(roc_auc_score(truth, d.score(test)) for d in parts.values()) < 0.9
    with pytest.raises(ValueError, match="both defective and good"):
        Stacked(parts).fit(fit, np.zeros(800, bool))
