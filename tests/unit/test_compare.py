"""`conceptlens compare` without Ray: the intervals and the significance rule, root causes matched by their
concepts and sentences, the sections built from small synthetic outputs, and the runs resolved (by name, by
MLflow run id, by a registered classifier version) in a real sqlite MLflow store, with clear errors."""
import json
import math

import mlflow
import numpy as np
import pytest

from conceptlens.config import CompareConfig, load_config
from conceptlens.jobs import compare as job
from conceptlens.pipeline.registry import register_folder
from conceptlens.pipeline.tracking import log_results, mlflow_run, tracking_uri
from conceptlens.models.registered import ClassifierPyfunc
from conceptlens.report.compare import compare_outputs
from conceptlens.report.compare_match import causes, match, sentence_words, similarity
from conceptlens.report.compare_page import render_page, summary_text
from conceptlens.report.compare_runs import RunOutputs, RunRef, client_for, resolve
from conceptlens.report.compare_stats import (auroc_estimate, change, hanley_mcneil_se, overlap, share_estimate,
                                              z_value)


# --- intervals and significance -----------------------------------------------------------------------------

def test_wilson_and_hanley_mcneil_match_their_formulas():
    assert z_value(0.95) == pytest.approx(1.959964, abs=1e-6)
    e = share_estimate(0.5, 100, 0.95)
    assert (e["low"], e["high"]) == pytest.approx((0.40383, 0.59617), abs=1e-5)  # the textbook 50/100
    e = share_estimate(0.0, 10, 0.95)
    assert e["low"] == pytest.approx(0.0, abs=1e-12) and e["high"] == pytest.approx(0.27753, abs=1e-5)  # none seen: still an upper bound
    with pytest.raises(ValueError, match="compare.confidence"):
        share_estimate(0.5, 100, 1.0)
    assert hanley_mcneil_se(0.9, 50, 50) == pytest.approx(0.032124, abs=1e-5)  # Hanley & McNeil (1982), by hand
    e = auroc_estimate(0.9, 50, 50)
    assert e["low"] == pytest.approx(0.9 - 1.959964 * 0.032124, abs=1e-4) and e["high"] <= 1.0
    with pytest.raises(ValueError, match="compare.confidence"):
        z_value(1.0)


def test_significant_only_where_the_intervals_do_not_overlap():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n1, n2 = rng.integers(5, 400, 2)
        a, b = share_estimate(rng.random(), n1, 0.95), share_estimate(rng.random(), n2, 0.95)
        c = change(a, b, 0.95)
        assert c["significant"] == (not overlap(a, b))
        assert c["delta_low"] <= c["delta"] <= c["delta_high"]  # Newcombe's interval holds the delta
        if c["significant"]:  # disjoint intervals: the delta's interval excludes 0 too
            assert c["delta_low"] > 0 or c["delta_high"] < 0


def test_two_samples_of_the_same_rate_are_rarely_called_different():
    """Two seeds of one setup: at p = 0.8 on 200 rows each, the 95 % intervals rarely fail to overlap."""
    rng = np.random.default_rng(1)
    calls = [change(share_estimate(rng.binomial(200, 0.8) / 200, 200, 0.95),
                    share_estimate(rng.binomial(200, 0.8) / 200, 200, 0.95), 0.95)["significant"] for _ in range(2000)]
    assert np.mean(calls) < 0.02


def test_no_interval_no_verdict():
    assert change(auroc_estimate(0.8), auroc_estimate(0.99), 0.95) | {"a": None, "b": None} == {
        "a": None, "b": None, "delta": pytest.approx(0.19), "delta_low": None, "delta_high": None,
        "significant": False, "note": "no interval", "test": None, "paired": False}
    only = change(share_estimate(0.5, 10, 0.95), None, 0.95)
    assert only["note"] == "only in run A" and not only["significant"] and only["delta"] is None
    assert change(None, share_estimate(0.5, 10, 0.95), 0.95)["note"] == "only in run B"


# --- root causes matched -------------------------------------------------------------------------------------

def card(cluster, classes, concepts, rows=50):
    pairs = [{"true": c, "predicted": "x", "rows": rows // len(classes)} for c in classes]
    return {"cluster": cluster, "size": rows, "share": 0.1, "pairs": pairs,
            "concepts": [{"concept": c, "ratio": r} for c, r in concepts]}


def said(cluster, sentence):
    return {"cluster": cluster, "sentences": [{"sentence": sentence}]}


def test_negation_binds_to_the_next_word():
    assert sentence_words(["a photo of a small star not on water"]) == {"small", "star", "not-water"}
    assert sentence_words(["a photo of a star on water"]) == {"star", "water"}


def test_causes_are_matched_by_concepts_and_sentences():
    a = causes([card(0, ["star"], [("background=water", 0.05)], 150), card(1, ["circle"], [("lighting=dark", 3.2)]),
                card(-1, ["heart"], [])],  # noise is no cause
               [said(0, "a photo of a small star not on water"), said(1, "a photo of a circle in the dark")])
    b = causes([card(4, ["circle"], [("lighting=dark", 2.9), ("size=small", 1.5)]),
                card(5, ["heart"], [("pattern=striped", 4.0)])],
               [said(4, "a photo of a small circle in the dark"), said(5, "a photo of a striped heart")])
    assert [c["id"] for c in a] == [0, 1] and a[0]["sentences"] == ["a photo of a small star not on water"]
    assert similarity(a[1], b[0]) == pytest.approx(0.5 * 2 / 3 + 0.5 * 2 / 3)  # 2 of 3 tokens, 2 of 3 words
    assert similarity(a[0], a[0]) == 1.0 and similarity(a[0], b[1]) == 0.0
    found = match(a, b, threshold=0.5)
    assert found == {"persisting": [(1, 0, pytest.approx(2 / 3))], "fixed": [0], "new": [1]}
    assert match(a, b, threshold=0.9)["persisting"] == []  # stricter: nothing is the same cause
    no_sentences = causes([card(4, ["circle"], [("lighting=dark", 2.9)])])
    assert similarity(a[1], no_sentences[0]) == 1.0  # without sentences on one side: concepts alone
    with pytest.raises(ValueError, match="compare.match_threshold"):
        match(a, b, threshold=1.5)


# --- sections from synthetic outputs -----------------------------------------------------------------------

def scorecard(slice_accuracy, slice_n, planted, goal_met):
    return {"run": "x", "world": {"accuracy": 0.9, "n": 1000, "min_gap": 0.2, "scenarios": {
        "star_on_water": {"kind": "spurious_correlation", "classes": ["star"], "attribute": "background=water",
                          "n": slice_n, "accuracy": slice_accuracy, "gap": 0.9 - slice_accuracy, "planted": planted}}},
        "runtime": {"scenarios": {"overall": {"auroc": 0.95, "n": 1000, "n_defective": 100}}},
        "goals": {"head_retraining.star_on_water": {"value": 0.3, "target": 0.1, "met": goal_met}}}


def outputs(tmp_path, name, card_, monitor=None, heatmap=None, cards=None):
    files = {}
    for key, value in (("evaluate/scorecard.json", card_), ("monitor/metrics.json", monitor),
                       ("rootcause/cards.json", cards)):
        if value is not None:
            path = tmp_path / name / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(value))
            files[key] = path
    if heatmap is not None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = tmp_path / name / "analyze" / "heatmaps_vlm.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(heatmap), path)
        files["analyze/heatmaps_vlm.parquet"] = path
    return RunOutputs(RunRef(name, name, f"{name:0<32}", "1", f"run name '{name}'"), {}, files)


def cell(cls, concept, log_rr, significant):
    return {"kind": "risk_ratio", "class": cls, "concept": concept, "n": 100.0, "value": log_rr,
            "low": log_rr - 0.3, "high": log_rr + 0.3, "p": 0.01, "q": 0.01 if significant else 0.5,
            "significant": significant, "source": "vlm", "reliable": True}


def test_a_repaired_slice_is_fixed_and_the_sections_say_what_is_absent(tmp_path):
    monitor_a = {"thresholds": {"misclassified": 0.9, "adversarial": 0.8}, "detection": {"f.misclassified": {"auroc": 0.9}},
                 "test_accuracy": 0.9, "verdicts": {"accept": 1000}, "false_alarm_rate": {"test": 0.05}}
    monitor_b = monitor_a | {"thresholds": {"misclassified": 0.7, "adversarial": 0.82}}
    a = outputs(tmp_path, "a", scorecard(0.4, 200, True, False), monitor_a,
                [cell("star", "background=water", -3.0, True), cell("star", "size=small", 1.0, False)],
                {"heldout": [card(0, ["star"], [("background=water", 0.05)])]})
    b = outputs(tmp_path, "b", scorecard(0.85, 200, False, True), monitor_b,
                [cell("star", "background=water", -0.1, False), cell("star", "size=small", 1.2, True)])
    result = compare_outputs(a, b, CompareConfig())
    s = result["slices"]["rows"][0]
    assert s["name"] == "star_on_water" and s["verdict"] == "fixed" and s["significant"]
    assert result["accuracy"]["source"] == "scorecard (test rows)" and not result["accuracy"]["significant"]
    blamed = {r["concept"]: r["status"] for r in result["blamed"]["rows"]}
    assert blamed == {"background=water": "disappeared", "size=small": "appeared"}
    assert result["causes"] == {"absent": "no `rootcause` outputs in run 'b' (run `conceptlens rootcause`)"}
    drift = {t["head"]: t["drift"] for t in result["filter"]["thresholds"]}
    assert drift == {"misclassified": True, "adversarial": False}  # -22 % and +2.5 % against a 10 % limit
    assert result["filter"]["detection"][0]["note"] == "no interval"
    assert result["goals"]["rows"][0]["status"] == "newly met"
    assert [c["what"] for c in result["significant"]][:1] == ["slice star_on_water accuracy (fixed)"]
    text = summary_text(result)
    assert "star_on_water" in text and "fixed" in text and "DRIFT" in text and "root causes: not compared" in text
    page = render_page(result)
    assert all(f'id="{i}"' in page for i in ("toc", "summary", "slices", "blamed", "causes", "filter", "goals"))
    assert "http://" not in page and "https://" not in page and "fixed" in page
    same = compare_outputs(a, a, CompareConfig())
    assert not same["significant"] and same["causes"]["persisting"][0]["similarity"] == 1.0


# --- resolution in a real MLflow store ---------------------------------------------------------------------

def logged_run(root, name, classifier_bytes, accuracy):
    """A run as `world` and `evaluate` leave it in MLflow: models that fingerprint the run, and a scorecard."""
    folder = root / name / "world"
    folder.mkdir(parents=True)
    (folder / "classifier.pt").write_bytes(classifier_bytes)
    (folder / "models.json").write_text(json.dumps({"classifier": str(folder / "classifier.pt"), "vlm": "openai"}))
    cfg = load_config([], [f"run.root={root}", f"run.name={name}"])
    out = root / name / "evaluate"
    out.mkdir()
    (out / "scorecard.json").write_text(json.dumps(scorecard(accuracy, 100, True, False)))
    with mlflow_run(cfg, "evaluate") as run:
        log_results({"accuracy": accuracy}, out / "scorecard.json")
    return cfg, run.info.run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    base, child = logged_run(root, "base", b"weights of the base classifier", 0.4)
    logged_run(root, "repaired", b"weights of the repaired classifier", 0.8)
    folder = root / "registered"
    folder.mkdir()
    (folder / "classifier.pt").write_bytes(b"weights of the repaired classifier")
    (folder / "classifier.json").write_text(json.dumps({"arch": "resnet18", "head": "fc", "num_classes": 10}))
    (root / "unused").mkdir()
    (root / "unused" / "classifier.pt").write_bytes(b"a classifier no run used")
    (root / "unused" / "classifier.json").write_text((folder / "classifier.json").read_text())
    mlflow.set_tracking_uri(tracking_uri(base))
    with mlflow.start_run(run_name="registering") as run:
        register_folder(folder, ClassifierPyfunc(), "clf", "repaired", model="classifier")  # as `neurons` does
        mlflow.log_artifacts(str(root / "unused"), "unused")  # a plain folder version: resolved by its files
    client = mlflow.MlflowClient(tracking_uri(base))
    version = client.create_model_version("clf", f"runs:/{run.info.run_id}/unused", run_id=run.info.run_id)
    client.set_registered_model_alias("clf", "unused", version.version)
    return root, base, child


def test_runs_resolve_by_name_by_child_run_id_and_by_classifier_version(store):
    root, cfg, child = store
    uri = tracking_uri(cfg)
    client = client_for(uri)
    assert resolve(client, uri, "base", "conceptlens").name == "base"
    by_id = resolve(client, uri, child, "conceptlens")
    assert by_id.name == "base" and by_id.run_id != child and "run 'base/evaluate'" in by_id.how
    version = resolve(client, uri, "models:/clf@repaired", "conceptlens")
    assert version.name == "repaired" and "version 1" in version.how


@pytest.mark.parametrize("ref, message", [
    ("nosuchrun", "unknown run 'nosuchrun': known runs are base, repaired"),
    ("0123456789abcdef0123456789abcdef", "known runs are base, repaired"),
    ("models:/clf@unused", "no run used this classifier (version 2"),
    ("models:/nosuchmodel@champion", "models:/nosuchmodel@champion"),
])
def test_unknown_references_exit_2_naming_what_exists(store, ref, message, capsys):
    root, _, _ = store
    assert job.main(["base", ref, f"run.root={root}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # one line (after MLflow's download progress, if any)
    assert err.startswith("conceptlens compare: ") and message in err
    if "unused" in ref:
        assert "conceptlens embed run.name=repaired classifier.checkpoint=models:/clf@unused" in err


def test_a_missing_store_and_a_missing_run_are_refused(tmp_path, capsys):
    assert job.main(["a", "b", f"run.root={tmp_path}"]) == 2
    assert "no MLflow store at" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        job.main(["only_one"])
    assert exit_.value.code == 2


def test_the_job_writes_the_page_and_logs_a_compare_run(store, capsys):
    root, cfg, _ = store
    assert job.main(["base", "models:/clf@repaired", f"run.root={root}"]) == 0
    printed = capsys.readouterr().out
    folder = root / "compare" / "base__vs__repaired"
    result = json.loads((folder / "compare.json").read_text())
    assert result["slices"]["rows"][0]["verdict"] in ("fixed", "reduced") and f"page: {folder / 'index.html'}" in printed
    assert "star_on_water" in printed and (folder / "index.html").read_text().startswith("<!DOCTYPE html>")
    client = mlflow.MlflowClient(tracking_uri(cfg))
    run = client.get_run(result["mlflow_run_id"])
    assert run.data.tags["conceptlens.kind"] == "compare" and "mlflow.parentRunId" not in run.data.tags
    assert run.data.tags["conceptlens.compare.b"] == "repaired" and run.data.metrics["slices_fixed"] + \
        run.data.metrics["slices_reduced"] == 1
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"compare.json", "index.html"}
    assert math.isfinite(run.data.metrics["accuracy_delta"])


def test_a_section_s_intervals_hold_together():
    from conceptlens.report.compare import level

    assert level(CompareConfig(), 1) == 0.95 and level(CompareConfig(), 4) == pytest.approx(1 - 0.05 / 4)
    assert level(CompareConfig(simultaneous=False), 4) == 0.95


# --- paired rows: the same images in both runs ---------------------------------------------------------------

def embedded(tmp_path, name, images, labels, predictions):
    """A run's `embed` outputs as compare downloads them: ``predictions.parquet`` written by the real writer from a
    small embeddings table whose rows point at ``images`` (files: only their content matters)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from conceptlens.pipeline.predictions import write_predictions

    folder = tmp_path / name / "embed"
    (folder / "embeddings").mkdir(parents=True)
    n = len(images)
    pq.write_table(pa.table({"id": [f"test-{i:06d}" for i in range(n)], "path": [str(p) for p in images],
                             "split": ["test"] * n, "label": [f"c{k}" for k in labels],
                             "label_index": np.asarray(labels, np.int64),
                             "prediction": np.asarray(predictions, np.int64)}), folder / "embeddings" / "part-0.parquet")
    assert write_predictions(folder / "embeddings", folder / "predictions.parquet") == n
    return folder / "predictions.parquet"


def world_images(tmp_path, world, n, content=None):
    """``n`` image files of one world (ids repeat across worlds; the contents do not)."""
    folder = tmp_path / "worlds" / world
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"test-{i:06d}.png" for i in range(n)]
    for i, p in enumerate(paths):
        p.write_bytes(f"{content or world}: image {i}".encode())
    return paths


def scored_run(tmp_path, name, images, labels, predictions, filter_scores=None, overall_auroc=0.9):
    """A run with embed's predictions and a scorecard of those rows (and evaluate's per-row filter scores)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    wrong = np.asarray(predictions) != np.asarray(labels)
    card = scorecard(0.5, 100, True, False)
    card["world"] |= {"accuracy": float(1 - wrong.mean()), "n": len(labels)}
    card["runtime"]["scenarios"] = {"overall": {"auroc": overall_auroc, "n": len(labels), "n_defective": int(wrong.sum())},
                                    "star_on_water": {"auroc": 0.8, "n": 300, "n_defective": 30}}
    run = outputs(tmp_path, name, card)
    run.files["embed/predictions.parquet"] = embedded(tmp_path, name, images, labels, predictions)
    if filter_scores is not None:
        path = tmp_path / name / "evaluate" / "filter_scores.parquet"
        pq.write_table(pa.table({"id": [f"test-{i:06d}" for i in range(len(labels))], "score": filter_scores}), path)
        run.files["evaluate/filter_scores.parquet"] = path
    return run


def repaired_predictions(n=3000, seed=0):
    """Labels, a base head's predictions (246 errors: 0.918) and a repaired head's (60 fixed, 6 broken: +54 net
    rows, 0.936): the demo's numbers, where the two runs' Wilson intervals touch."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    base, repaired = labels.copy(), labels.copy()
    order = rng.permutation(n)
    base_wrong, fixed, broken = order[:246], order[:60], order[246:252]
    base[base_wrong] = (labels[base_wrong] + 1) % 10
    repaired[base_wrong] = base[base_wrong]
    repaired[fixed] = labels[fixed]
    repaired[broken] = (labels[broken] + 2) % 10
    return labels, base, repaired


def test_rows_pair_by_id_and_image_content_not_by_id_alone(tmp_path):
    from conceptlens.report.compare_paired import pair_rows, predictions_of

    labels, base, _ = repaired_predictions(200)
    demo, seed1 = world_images(tmp_path, "demo", 200), world_images(tmp_path, "seed1", 200)
    table = lambda name, imgs: predictions_of(scored_run(tmp_path, name, imgs, labels, base))
    a, same, other = table("a", demo), table("b", demo), table("c", seed1)
    p = pair_rows(a, same)
    assert p.paired and p.summary["same_images"] == 200 and p.summary["by"] == {"digest": 200, "path": 0}
    assert (p.ia == p.ib).all()
    p = pair_rows(a, other)  # another world: the same ids, other images
    assert not p.paired and p.summary["ids_shared"] == 200 and p.summary["same_images"] == 0
    assert "none is the same image" in p.summary["why"]
    # a world rendered again in place (same paths, other pixels) is no longer the same images either
    world_images(tmp_path, "demo", 200, content="regenerated")
    assert not pair_rows(a, table("d", demo)).paired
    # without digests (images not readable here) the paths decide; a different label never pairs
    rows = {"id": ["x", "y", "z"], "path": ["/p/x", "/p/y", "/p/z"], "digest": [None] * 3, "label": ["c1", "c2", "c3"]}
    moved = rows | {"path": ["/p/x", "/q/y", "/p/z"], "label": ["c1", "c2", "c9"]}
    p = pair_rows(rows, moved)
    assert p.summary["same_images"] == 1 and p.summary["by"] == {"digest": 0, "path": 1} and not p.paired
    assert "only 1 of the smaller run's 3 rows" in p.summary["why"]


def test_shared_rows_are_compared_by_mcnemar_where_wilson_intervals_would_overlap(tmp_path):
    labels, base, repaired = repaired_predictions()
    images = world_images(tmp_path, "demo", len(labels))
    a, b = scored_run(tmp_path, "demo", images, labels, base), scored_run(tmp_path, "repaired", images, labels, repaired)
    result = compare_outputs(a, b, CompareConfig())
    acc = result["accuracy"]
    assert acc["test"] == "mcnemar" and acc["paired"] and acc["rows_paired"] == 3000
    assert acc["discordant"] == {"a_right_b_wrong": 6, "b_right_a_wrong": 60, "net": 54}
    assert acc["delta"] == pytest.approx(54 / 3000) and acc["delta_low"] > 0 and acc["significant"]
    assert acc["p"] < 1e-6 and (acc["a"]["value"], acc["b"]["value"]) == pytest.approx((0.918, 0.936))
    unpaired = change(share_estimate(0.918, 3000, 0.95), share_estimate(0.936, 3000, 0.95), 0.95)
    assert unpaired["test"] == "wilson" and not unpaired["significant"]  # the same numbers, read as two samples
    assert result["pairing"]["paired"] and result["pairing"]["same_images"] == 3000
    assert result["slices"]["unpaired_because"].startswith("which rows a slice holds is ground truth")
    assert result["slices"]["rows"][0]["test"] == "wilson" and not result["slices"]["rows"][0]["paired"]
    listed = next(s for s in result["significant"] if s["section"] == "accuracy")
    assert listed["test"] == "mcnemar" and listed["paired"]
    text = summary_text(result)
    assert "McNemar, paired on 3000 rows" in text and "B right, A wrong: 60" in text
    assert "rows: 3000 same images in both runs (3000 by digest" in text
    assert f"[{acc['delta_low']:+.3g}, {acc['delta_high']:+.3g}] *" in text
    page = render_page(result)
    assert "McNemar, paired on 3000 rows" in page and "net +54" in page
    assert json.loads(json.dumps(job._clean(result)))["accuracy"]["test"] == "mcnemar"  # compare.json as written


def test_runs_of_different_worlds_are_compared_unpaired(tmp_path):
    labels, base, repaired = repaired_predictions()
    a = scored_run(tmp_path, "demo", world_images(tmp_path, "demo", 3000), labels, base)
    b = scored_run(tmp_path, "seed1", world_images(tmp_path, "seed1", 3000), labels, repaired)
    result = compare_outputs(a, b, CompareConfig())
    acc = result["accuracy"]
    assert acc["test"] == "wilson" and not acc["paired"] and acc["source"] == "scorecard (test rows)"
    assert "none is the same image" in acc["unpaired_because"] and not acc["significant"]
    assert result["pairing"]["ids_shared"] == 3000 and not result["pairing"]["paired"]
    assert "rows: not paired" in summary_text(result)
    no_rows = compare_outputs(outputs(tmp_path, "x", scorecard(0.5, 100, True, False)), a, CompareConfig())
    assert "no per-row predictions" in no_rows["accuracy"]["unpaired_because"]


def test_the_filter_auroc_is_paired_by_delong_only_where_the_errors_are_the_same_rows(tmp_path):
    labels, base, repaired = repaired_predictions(1000)
    images = world_images(tmp_path, "demo", 1000)
    rng = np.random.default_rng(3)
    wrong = base != labels
    old, new = rng.normal(size=1000) + 1.0 * wrong, rng.normal(size=1000) + 2.0 * wrong  # a better filter
    a = scored_run(tmp_path, "a", images, labels, base, old)
    b = scored_run(tmp_path, "b", images, labels, base, new)  # the same classifier, a new filter
    rows = {r["name"]: r for r in compare_outputs(a, b, CompareConfig())["filter"]["slices"]}
    overall = rows["overall"]
    assert overall["test"] == "delong" and overall["paired"] and overall["rows_paired"] == 1000
    assert overall["delta"] > 0 and overall["delta_low"] > 0 and overall["significant"]
    assert overall["a"]["n_pos"] == int(wrong.sum()) and overall["a"]["low"] < overall["a"]["value"]
    assert rows["star_on_water"]["test"] == "hanley-mcneil" and not rows["star_on_water"]["paired"]  # slices: truth
    c = scored_run(tmp_path, "c", images, labels, repaired, new)  # another classifier: other errors
    overall = next(r for r in compare_outputs(a, c, CompareConfig())["filter"]["slices"] if r["name"] == "overall")
    assert overall["test"] == "hanley-mcneil" and not overall["paired"]
    assert "err on different rows" in overall["unpaired_because"]
