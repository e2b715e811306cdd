"""The concept filter on a synthetic world where defects are known: fit, verdicts, thresholds, bundle round trip."""
import numpy as np
import pytest

from conceptlens.semantic.aligner import Aligner
from conceptlens.runtime.filter import SIGNALS, ConceptFilter


def world(n, seed, adversarial=False):
    """3 classes; the VLM embedding shows the true class; the encoder agrees unless the row is defective."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    wrong = rng.random(n) < (0.9 if adversarial else 0.15)
    predictions = np.where(wrong, (labels + rng.integers(1, 3, n)) % 3, labels)
    centres = np.eye(3, 6) * 3
    vlm = centres[labels] + rng.normal(size=(n, 6))
    features = np.c_[centres[predictions] + rng.normal(size=(n, 6)), rng.normal(size=(n, 2))]
    logits = 2 * np.eye(3)[predictions] + rng.normal(size=(n, 3)) * (1.5 if adversarial else 1.0)
    logits[wrong & ~adversarial] *= 0.3  # natural mistakes are less confident
    unit = vlm / np.linalg.norm(vlm, axis=1, keepdims=True)
    return {"label_index": labels, "prediction": predictions, "logits": logits, "features": features,
            "vlm_embedding": unit}


def make_filter():
    concepts = np.eye(5, 6)
    concepts[3:] = [[1, 1, 0, 0, 0, 0], [0, 1, 1, 0, 0, 0]]
    concepts /= np.linalg.norm(concepts, axis=1, keepdims=True)
    identity = Aligner(np.eye(8, 6, dtype=np.float32), np.zeros(6, np.float32))
    return ConceptFilter(identity, concepts, np.eye(3, 6), {"aligned": np.zeros(5), "vlm": np.zeros(5)},
                         {"aligned": np.ones(5), "vlm": np.ones(5)}, [f"c{i}" for i in range(5)], ["a", "b", "c"])


def test_filter_separates_defects_and_keeps_its_false_alarm_budget(tmp_path):
    filt = make_filter().fit(world(3000, 0), world(1000, 1, adversarial=True), fpr=0.05)
    test, attacked = world(3000, 2), world(1000, 3, adversarial=True)
    scores = filt.score_all(test)
    wrong = test["prediction"] != test["label_index"]
    from sklearn.metrics import roc_auc_score
    assert roc_auc_score(wrong, scores["misclassified"]) > 0.9
    verdicts = filt.verdicts(test)["verdict"]
    assert (verdicts[~wrong] != "accept").mean() < 0.1
    fooled = attacked["prediction"] != attacked["label_index"]
    assert (filt.verdicts(attacked)["verdict"][fooled] != "accept").mean() > 0.5
    assert filt.signals(test).shape == (3000, len(SIGNALS))

    loaded = ConceptFilter.load(filt.save(tmp_path / "bundle", metadata={"run": "x"}))
    assert np.allclose(loaded.score_all(test)["adversarial"], filt.score_all(test)["adversarial"])
    assert list(loaded.verdicts(test)["verdict"]) == list(verdicts)
    everything = loaded.verdicts(test, {"misclassified": -1.0, "adversarial": 2.0})["verdict"]
    assert set(everything) == {"likely-misclassified"}


def test_explanations_name_concepts_in_words():
    filt = make_filter().fit(world(1000, 0), world(500, 1, adversarial=True))
    reasons = filt.explain(world(4, 5), top=2)
    assert len(reasons) == 4 and all(len(r) == 2 for r in reasons)
    assert reasons[0][0]["concept"] in filt.concept_names and "correct" in reasons[0][0]["text"]


def test_concepts_the_trust_check_did_not_back_are_never_named(tmp_path):
    filt = make_filter().fit(world(1000, 0), world(500, 1, adversarial=True))
    rows = world(20, 5)
    named = {r["concept"] for reasons in filt.explain(rows, top=2) for r in reasons}
    filt.unreliable = sorted(named)[:1]
    loaded = ConceptFilter.load(filt.save(tmp_path / "bundle"))
    for explainer in (filt, loaded):
        reasons = explainer.explain(rows, top=2)
        assert all(len(r) == 2 for r in reasons)
        assert filt.unreliable[0] not in {r["concept"] for rs in reasons for r in rs}
    loaded.unreliable = list(loaded.concept_names)  # a VLM that did not see the classes: nothing to name
    assert loaded.explain(rows) == [[] for _ in range(20)]


def test_missing_bundle_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no filter bundle"):
        ConceptFilter.load(tmp_path)


def test_folds_keep_every_copy_of_an_image_together_and_are_seeded():
    from conceptlens.runtime.filter import folds, sources

    ids = np.array([f"img{i}" for i in range(3000)])
    clean = folds(sources({"id": ids, "prediction": np.zeros(3000)}))
    attacked = folds(sources({"id": np.char.add(ids, "-pgd-8"), "source_id": ids, "prediction": np.zeros(3000)}))
    assert np.array_equal(clean, attacked) and set(clean) == {0, 1, 2}
    assert all(abs((clean == k).mean() - 1 / 3) < 0.04 for k in range(3))
    assert not np.array_equal(clean, folds(ids, seed=1))
    assert np.array_equal(folds(ids[::-1])[::-1], clean)  # a row's fold does not depend on the others


def test_only_attacks_that_flip_a_correct_prediction_are_attacks():
    from conceptlens.runtime.filter import successful_attacks

    rows = {"label_index": np.array([0, 0, 0, 1]), "prediction": np.array([1, 0, 2, 0]),
            "clean_prediction": np.array([0, 0, 2, 0])}
    assert successful_attacks(rows).tolist() == [True, False, False, False]  # row 2 and 3 were already wrong
    del rows["clean_prediction"]
    assert successful_attacks(rows).tolist() == [True, False, True, True]


def test_joint_thresholds_keep_the_union_of_heads_within_the_budget():
    from conceptlens.runtime.filter import joint_thresholds

    rng = np.random.default_rng(0)
    a = rng.random(4000)
    for b in (a, rng.random(4000)):  # the same score twice: each head may take the whole budget; independent: half
        t = joint_thresholds({"misclassified": a, "adversarial": b}, 0.05)
        union = ((a > t["misclassified"]) | (b > t["adversarial"])).mean()
        assert 0.045 <= union <= 0.05


def test_heads_and_thresholds_never_see_an_image_that_shaped_the_references():
    """Fitting on rows with ids: the folds partition the images; refitting after shuffling rows changes nothing."""
    calib, attacked = world(3000, 0), world(1000, 1, adversarial=True)
    calib["id"] = np.array([f"i{i}" for i in range(3000)])
    attacked["source_id"] = calib["id"][:1000]
    attacked["clean_prediction"] = calib["prediction"][:1000]
    filt = make_filter().fit(calib, attacked, fpr=0.05)
    order = np.random.default_rng(3).permutation(3000)
    shuffled = make_filter().fit({k: v[order] for k, v in calib.items()}, attacked, fpr=0.05)
    assert filt.thresholds == pytest.approx(shuffled.thresholds)
