"""`conceptlens attack` and `conceptlens monitor` on the demo's ConceptWorld: real torchattacks, real registry."""
import json

import mlflow
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conceptlens.runtime.registered import load_bundle
from conceptlens.runtime.filter import ConceptFilter

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(demo_done, demo_run):
    assert demo_done[0] == 0
    return demo_run / "demo"


def test_attacks_are_real_bounded_and_embedded(run):
    manifest = pq.read_table(run / "attack" / "adversarial.parquet")
    metrics = json.loads((run / "attack" / "metrics.json").read_text())
    assert set(manifest.column("split").to_pylist()) == {"calib", "test"}
    assert {(a, e) for a, e in zip(manifest["attack"].to_pylist(), manifest["epsilon"].to_pylist())} == {
        (a, e) for a in ("fgsm", "pgd", "apgd") for e in (2.0, 4.0, 8.0)}
    success = metrics["success"]
    for attack in ("fgsm", "pgd", "apgd"):  # a bigger budget fools the classifier more often
        assert success[f"{attack}_eps2"]["success_rate"] < success[f"{attack}_eps8"]["success_rate"], attack
    assert success["pgd_eps8"]["success_rate"] > 0.8
    sources = {r["id"]: r["path"] for r in pq.read_table(run / "world" / "manifest.parquet",
                                                          columns=["id", "path"]).to_pylist()}
    for row in manifest.slice(0, 20).to_pylist():  # the stored PNG stays within the L∞ budget of its source
        adv = np.asarray(Image.open(row["path"]), np.int16)
        clean = np.asarray(Image.open(sources[row["source_id"]]).convert("RGB"), np.int16)
        assert np.abs(adv - clean).max() <= row["epsilon"] + 1
    embedded = pq.read_table(run / "attack" / "embeddings", columns=["id", "attack", "epsilon", "prediction"])
    assert embedded.num_rows == manifest.num_rows == metrics["rows"]


def test_filter_beats_the_baselines_on_misclassification(run):
    table = {(r["detector"], r["task"]): r for r in pq.read_table(run / "monitor" / "evaluation.parquet").to_pylist()}
    ours = table[("concept filter", "misclassified")]["auroc"]
    assert ours >= 0.90
    for baseline in ("msp", "energy", "mahalanobis", "knn"):
        assert ours > table[(baseline, "misclassified")]["auroc"], baseline
    assert table[("concept filter", "pgd_eps8")]["auroc"] >= 0.95


def test_thresholds_hold_the_false_alarm_rate_and_accepted_inputs_are_more_accurate(run):
    metrics = json.loads((run / "monitor" / "metrics.json").read_text())
    accepted = metrics["accepted"]
    assert accepted["false_alarm_rate"] <= 2 * metrics["fpr_target"]  # chosen on calib, measured on test
    assert accepted["accuracy"] > metrics["test_accuracy"] + 0.03


def test_the_bundle_is_registered_and_loads_back(run):
    mlflow.set_tracking_uri(f"sqlite:///{run.parent / 'mlflow.db'}")
    registered = load_bundle("models:/conceptlens-filter@champion")
    local = ConceptFilter.load(run / "monitor" / "bundle")
    assert registered.thresholds == local.thresholds and registered.class_names == local.class_names
    assert np.array_equal(registered.references["correct"], local.references["correct"])
    rows = pq.read_table(run / "embed" / "embeddings").slice(0, 16)
    batch = {k: np.stack(rows[k].to_numpy(zero_copy_only=False)) if k != "prediction" else rows[k].to_numpy()
             for k in ("prediction", "logits", "features", "vlm_embedding")}
    assert list(registered.verdicts(batch)["verdict"]) == list(local.verdicts(batch)["verdict"])
    assert set(registered.verdicts(batch, {"misclassified": 1.0, "adversarial": 1.0})["verdict"]) == {"accept"}
    assert all(len(reasons) == 3 and reasons[0]["text"] for reasons in local.explain(batch))
