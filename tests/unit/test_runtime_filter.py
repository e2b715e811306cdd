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
