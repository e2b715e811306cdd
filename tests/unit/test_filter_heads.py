"""The concept filter without adversarial rows: the misclassification head alone, in fitting, scoring and the bundle."""
import json

import numpy as np
from sklearn.metrics import roc_auc_score

from conceptlens.runtime.filter import ConceptFilter
from test_runtime_filter import make_filter, world


def test_without_adversarial_rows_only_the_misclassification_head_exists(tmp_path):
    calib, test = world(3000, 0), world(3000, 2)
    for missing in (None, {k: v[:0] for k, v in world(10, 1, adversarial=True).items()}):
        filt = make_filter().fit(calib, missing, fpr=0.05)
        assert list(filt.heads) == ["misclassified"] and list(filt.thresholds) == ["misclassified"]
        assert "adversarial" not in filt.references
    scores = filt.score_all(test)
    wrong = test["prediction"] != test["label_index"]
    assert list(scores) == ["misclassified"] and roc_auc_score(wrong, scores["misclassified"]) > 0.9
    assert np.allclose(filt.score(test), scores["misclassified"] - filt.thresholds["misclassified"])
    verdicts = filt.verdicts(test, {"adversarial": 0.0})  # a threshold for a head it lacks is ignored
    assert set(verdicts) == {"verdict", "misclassified"} and filt.verdict_names == ("accept", "likely-misclassified")
    assert set(verdicts["verdict"]) == {"accept", "likely-misclassified"}
    # one head takes the whole false-alarm budget (two heads take half each)
    assert 0.025 < (verdicts["verdict"][~wrong] != "accept").mean() < 0.1

    folder = filt.save(tmp_path / "bundle")
    assert json.loads((folder / "filter.json").read_text())["heads"] == ["misclassified"]
    loaded = ConceptFilter.load(folder)
    assert list(loaded.heads) == ["misclassified"]
    assert list(loaded.verdicts(test)["verdict"]) == list(verdicts["verdict"])


def test_adversarial_rows_give_both_heads_and_all_verdicts():
    filt = make_filter().fit(world(3000, 0), world(1000, 1, adversarial=True), fpr=0.05)
    assert list(filt.heads) == ["misclassified", "adversarial"] and len(filt.verdict_names) == 3
    assert set(filt.verdicts(world(500, 3, adversarial=True))["verdict"]) == set(filt.verdict_names)
