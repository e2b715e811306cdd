"""`conceptlens attack` and `conceptlens monitor` on the demo's ConceptWorld: real torchattacks, real registry."""
import json

import mlflow
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conceptlens.runtime.filter import ConceptFilter
from conceptlens.runtime.registered import load_bundle
from filter_parity import MODEL_COLUMNS, assert_parity  # tests/filter_parity.py (tests/ is on sys.path: conftest)

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


def test_filter_beats_every_baseline_the_supervised_one_included(run):
    table = {(r["detector"], r["task"]): r for r in pq.read_table(run / "monitor" / "evaluation.parquet").to_pylist()}
    ours = table[("concept filter", "misclassified")]["auroc"]
    assert ours >= 0.90
    for baseline in ("msp", "energy", "mahalanobis", "relative_mahalanobis", "knn", "stacked"):
        assert ours > table[(baseline, "misclassified")]["auroc"], baseline
    assert table[("concept filter", "pgd_eps8")]["auroc"] >= 0.95


def test_the_filter_is_compared_like_for_like_on_paired_intervals(run):
    """The stacked baseline given the filter's VLM signals and the filter without its concept signals are evaluated
    on every task; metrics.json has the filter's AUROC minus each baseline's and minus the ablation's, paired on
    the same test rows (DeLong), each inside its interval; the goal reads them (met or not: the finding is
    reported as it comes)."""
    from conceptlens.evaluation.runtime import filter_goals, filter_section

    table = {(r["detector"], r["task"]): r for r in pq.read_table(run / "monitor" / "evaluation.parquet").to_pylist()}
    tasks = {t for d, t in table if d == "msp"}
    for name in ("stacked same signals", "filter without concepts"):
        assert {t for d, t in table if d == name} == tasks and all(0.5 < table[name, t]["auroc"] <= 1 for t in tasks)
    metrics = json.loads((run / "monitor" / "metrics.json").read_text())
    paired = metrics["filter_vs_baselines"]
    assert set(paired) == {"msp", "energy", "mahalanobis", "relative_mahalanobis", "knn", "stacked",
                           "stacked_same_signals"}
    ours = table[("concept filter", "misclassified")]["auroc"]
    for name, d in paired.items():
        assert d["auroc"] == pytest.approx(ours)
        assert d["other_auroc"] == pytest.approx(table[(name.replace("_", " ") if name.startswith("stacked_") else name,
                                                        "misclassified")]["auroc"])
        assert d["low"] <= d["difference"] <= d["high"] and 0 <= d["p"] <= 1
    added = metrics["filter_concepts_add"]
    assert added["other_auroc"] == pytest.approx(table[("filter without concepts", "misclassified")]["auroc"])
    goal = filter_goals(filter_section(metrics))["filter_above_baselines"]
    assert goal["best"] in paired and goal["met"] == all(d["low"] > 0 for d in paired.values())


def test_adversarial_positives_are_attacks_that_flipped_a_correct_prediction(run):
    """The positives of each attack task are exactly the manifest's rows whose clean image was classified right
    and whose attacked copy is not; the negatives the correctly classified clean test rows."""
    manifest = pq.read_table(run / "attack" / "adversarial.parquet").to_pandas()
    test = manifest[manifest["split"] == "test"]
    embedded = pq.read_table(run / "attack" / "embeddings", columns=["id", "prediction"]).to_pandas()
    test = test.drop(columns=["prediction"], errors="ignore").merge(embedded, on="id")
    table = {(r["detector"], r["task"]): r for r in pq.read_table(run / "monitor" / "evaluation.parquet").to_pylist()}
    clean = pq.read_table(run / "embed" / "embeddings", columns=["split", "label_index", "prediction"]).to_pandas()
    clean = clean[clean["split"] == "test"]
    for (attack, eps), rows in test.groupby(["attack", "epsilon"]):
        hits = int(((rows["clean_prediction"] == rows["label_index"]) & (rows["prediction"] != rows["label_index"])).sum())
        row = table[("msp", f"{attack}_eps{eps:g}")]
        assert row["n_defective"] == hits
        assert row["n"] - hits == int((clean["prediction"] == clean["label_index"]).sum())
        assert hits < int((rows["prediction"] != rows["label_index"]).sum()) or eps == 8  # some were wrong already


def test_unseen_attacks_are_measured_for_every_family_and_budget(run):
    rows = [r for r in pq.read_table(run / "monitor" / "evaluation.parquet").to_pylist() if r["task"].startswith("unseen_")]
    assert {r["task"] for r in rows} == {f"unseen_{a}" for a in ("fgsm", "pgd", "apgd")} | {
        f"unseen_eps{e}" for e in (2, 4, 8)}
    assert {r["detector"] for r in rows} == {"concept filter", "stacked"}
    assert all(r["n_defective"] > 0 and 0.5 < r["auroc"] <= 1 for r in rows)


def test_thresholds_hold_the_false_alarm_rate_and_accepted_inputs_are_more_accurate(run):
    metrics = json.loads((run / "monitor" / "metrics.json").read_text())
    far = metrics["false_alarm_rate"]
    assert abs(far["test"] - metrics["fpr_target"]) <= 0.015  # thresholds on one calib fold, measured on test
    assert far["gap_points"] == pytest.approx(100 * (far["test"] - far["target"]))
    assert metrics["accepted"]["accuracy"] > metrics["test_accuracy"] + 0.03


def test_alerts_name_a_failure_mode_for_flagged_test_rows(run):
    alerts = pq.read_table(run / "monitor" / "alerts.parquet").to_pandas()
    modes = json.loads((run / "monitor" / "bundle" / "failure_modes.json").read_text())
    assert len(alerts) == 3000 and set(alerts["verdict"]) <= {"accept", "likely-misclassified", "likely-adversarial"}
    flagged = alerts[alerts["verdict"] != "accept"]
    # a floor under the worst run measured, named as such: the share of flagged rows whose predicted class has a
    # failure mode was 0.77 on the demo's seed 0, 0.63 on a fresh clone at one thread (OMP_NUM_THREADS=1: another
    # trained model) and 0.81-0.97 on the nine other runs of benchmarks/fidelity.py (clusters of calib failures only,
    # so fewer (cluster, predicted class) groups reach their 5 members)
    assert (flagged["cluster"] >= 0).mean() > 0.55 and flagged["close_enough"].mean() > 0.5
    assert (alerts["close_enough"] == (alerts["distance"] <= 1)).all()
    assert modes["pipeline"] == json.loads((run / "rootcause" / "summary.json").read_text())["sets"]["heldout"][
        "chosen"]["pipeline"]


def test_the_bundle_is_registered_and_loads_back(run):
    mlflow.set_tracking_uri(f"sqlite:///{run.parent / 'mlflow.db'}")
    registered = load_bundle("models:/conceptlens-demo-filter@champion")
    local = ConceptFilter.load(run / "monitor" / "bundle")
    assert registered.thresholds == local.thresholds and registered.class_names == local.class_names
    assert np.array_equal(registered.references["correct"], local.references["correct"])
    rows = pq.read_table(run / "embed" / "embeddings").slice(0, 16)
    batch = {k: np.stack(rows[k].to_numpy(zero_copy_only=False)) if k != "prediction" else rows[k].to_numpy()
             for k in ("prediction", "logits", "features", "vlm_embedding")}
    assert list(registered.verdicts(batch)["verdict"]) == list(local.verdicts(batch)["verdict"])
    assert set(registered.verdicts(batch, {"misclassified": 1.0, "adversarial": 1.0})["verdict"]) == {"accept"}
    assert all(len(reasons) == 3 and reasons[0]["text"] for reasons in local.explain(batch))
    served = mlflow.pyfunc.load_model("models:/conceptlens-demo-filter@champion").predict(
        rows.select(["prediction", "logits", "features", "vlm_embedding"]).to_pandas())
    assert served["verdict"].tolist() == list(local.verdicts(batch)["verdict"])
    assert {"cluster", "distance", "close_enough"} <= set(served.columns)  # the failure modes travel too


def test_an_adaptive_attack_is_run_and_reported_as_it_comes(run):
    """The white-box attack on classifier + filter (a small sample in the demo): reported per ε; at 8/255 an attack
    that knows the filter gets past it more than PGD that does not (lower AUROC), as adaptive attacks do."""
    adaptive = json.loads((run / "monitor" / "metrics.json").read_text())["adaptive"]
    assert list(adaptive) == ["eps2", "eps4", "eps8"]
    for a in adaptive.values():
        assert a["correct"] > 30 and 0 <= a["success_vs_filter"] <= a["success_vs_classifier"] <= 1
    assert adaptive["eps8"]["success_vs_classifier"] > 0.9
    assert adaptive["eps8"]["filter_auroc"] < adaptive["eps8"]["pgd_filter_auroc"]
    assert adaptive["eps8"]["success_vs_filter"] > adaptive["eps8"]["pgd_success_vs_filter"]


def test_the_adaptive_attacks_torch_filter_matches_the_demo_bundle(run):
    """The white-box attack differentiates through a torch copy of the filter: on the demo's bundle and its own
    clean and attacked rows it gives the NumPy filter's signals and head scores."""
    filt = ConceptFilter.load(run / "monitor" / "bundle")
    for table in (run / "embed" / "embeddings", run / "attack" / "embeddings"):
        rows = pq.read_table(table, columns=["prediction", *MODEL_COLUMNS]).slice(0, 64)
        assert_parity(filt, {k: np.stack(rows[k].to_numpy(zero_copy_only=False)) for k in rows.column_names})
