"""Known failure modes at serving time (runtime/failure_modes.py) on synthetic root causes whose groups are known,
and the scorecard's alerts section (evaluation/alerts.py) on a tiny alerts table worked out by hand."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conceptlens.evaluation.alerts import alerts_section, dominated_clusters, holding_clusters
from conceptlens.evaluation.ground_truth import Truth
from conceptlens.runtime.failure_modes import FailureModes, RADIUS_FLOOR

D = 8
A, B = np.eye(D)[0] * 10, np.eye(D)[1] * 10  # two root causes, far apart


def blob(centre, n, rng):
    return centre + rng.normal(0, 1, (n, D))


def synthetic(rng):
    """Cluster 0 near A (predicted as 1 and as 2), cluster 1 near B (predicted as 2), a tiny group (cluster 1
    predicted as 3, 2 rows, below min_members) and noise rows."""
    x = np.concatenate([blob(A, 30, rng), blob(A, 20, rng), blob(B, 40, rng), blob(B, 2, rng), blob(B, 10, rng)])
    cluster = np.array([0] * 50 + [1] * 42 + [-1] * 10)
    prediction = np.array([1] * 30 + [2] * 20 + [2] * 40 + [3] * 2 + [1] * 10)
    return x.astype(np.float32), cluster, prediction


@pytest.fixture
def modes():
    x, cluster, prediction = synthetic(np.random.default_rng(0))
    return FailureModes.fit(x, cluster, prediction, pipeline="vlm/umap/kmeans", extractor="vlm", space="vlm",
                            sentences={0: "a photo of a star on water", 1: None}, concepts={0: ["background=water"]},
                            min_members=5, quantile=0.9)


def test_groups_are_cluster_and_predicted_class_with_enough_members(modes):
    groups = sorted(zip(modes.cluster.tolist(), modes.prediction.tolist(), modes.members.tolist()))
    assert groups == [(0, 1, 30), (0, 2, 20), (1, 2, 40)]  # (1, 3) has 2 rows; noise is no failure mode
    assert (modes.radii >= RADIUS_FLOOR).all()


def test_match_picks_the_nearest_group_of_the_predicted_class(modes):
    rng = np.random.default_rng(1)
    x = np.concatenate([blob(A, 4, rng), blob(B, 4, rng), blob(A, 4, rng)]).astype(np.float32)
    found = modes.match({"prediction": [2] * 8 + [1] * 4, "vlm_embedding": x})
    assert [f["cluster"] for f in found] == [0] * 4 + [1] * 4 + [0] * 4
    assert all(f["close_enough"] and f["distance"] <= 1 for f in found)
    assert found[0]["sentence"] == "a photo of a star on water" and found[0]["concepts"] == ["background=water"]
    assert found[4]["sentence"] is None and found[4]["concepts"] == []


def test_members_are_mostly_within_their_radius(modes):
    x, cluster, prediction = synthetic(np.random.default_rng(2))  # new rows from the same groups
    keep = cluster >= 0
    near = modes.nearest({"prediction": prediction[keep], "vlm_embedding": x[keep]})
    ok = prediction[keep] != 3
    assert near["close_enough"][ok].mean() >= 0.8
    assert (near["cluster"][ok] == cluster[keep][ok]).all()


def test_far_points_and_the_wrong_class_are_not_close_enough(modes):
    far = np.full((2, D), 40.0, np.float32)
    found = modes.match({"prediction": [1, 2], "vlm_embedding": far})
    assert [f["close_enough"] for f in found] == [False, False]
    assert found[0]["cluster"] == 0 and found[0]["distance"] > 1  # still names the nearest candidate
    # a B-like input predicted as 1: the only candidate is cluster 0 (near A), too far
    b_like = blob(B, 1, np.random.default_rng(3)).astype(np.float32)
    (only,) = modes.match({"prediction": [1], "vlm_embedding": b_like})
    assert only["cluster"] == 0 and not only["close_enough"]


def test_an_unseen_predicted_class_has_no_candidate(modes):
    x = blob(B, 2, np.random.default_rng(4)).astype(np.float32)
    found = modes.match({"prediction": [3, 7], "vlm_embedding": x})  # 3: a group too small; 7: none
    assert found == [{"cluster": None, "distance": None, "close_enough": False, "sentence": None, "concepts": []}] * 2
    near = modes.nearest({"prediction": [7], "vlm_embedding": x[:1]})
    assert near["cluster"].tolist() == [-1] and np.isnan(near["distance"][0]) and not near["close_enough"][0]


def test_save_and_load_round_trip(modes, tmp_path):
    assert FailureModes.load_optional(tmp_path) is None  # a bundle without failure modes
    with pytest.raises(FileNotFoundError):
        FailureModes.load(tmp_path)
    modes.save(tmp_path)
    back = FailureModes.load_optional(tmp_path)
    batch = {"prediction": [1, 2, 2, 7], "vlm_embedding": np.concatenate(
        [blob(A, 2, np.random.default_rng(5)), blob(B, 2, np.random.default_rng(6))]).astype(np.float32)}
    assert back.match(batch) == modes.match(batch)
    assert (back.space, back.pipeline, back.sentences, back.concepts) == (
        modes.space, modes.pipeline, modes.sentences, modes.concepts)


# --- from the commands' outputs -------------------------------------------------------------------------------

def write_outputs(root, extractor="vlm", explain=True):
    """rootcause + explain outputs for 2 clusters: calib rows c0..c49 (cluster 0), c50..c91 (cluster 1), c92..c101
    noise; test rows t0..t9 in cluster 1 (must not contribute)."""
    x, cluster, prediction = synthetic(np.random.default_rng(0))
    n = len(x)
    calib = {"id": np.array([f"c{i}" for i in range(n)], object), "split": np.array(["calib"] * n, object),
             "label_index": np.where(prediction == 5, 6, 5), "prediction": prediction, "vlm_embedding": x,
             "features": x[:, ::-1].copy()}
    pipeline = f"{extractor}/umap/kmeans"
    rc = root / "rootcause"
    rc.mkdir()
    ids = calib["id"].tolist() + [f"t{i}" for i in range(10)]
    labels = cluster.tolist() + [1] * 10
    pq.write_table(pa.table({"set": ["heldout"] * len(ids), "id": ids, "pipeline": [pipeline] * len(ids),
                             "cluster": labels, "noise": [c == -1 for c in labels]}), rc / "clusters.parquet")
    (rc / "summary.json").write_text(json.dumps({"sets": {"heldout": {"chosen": {
        "pipeline": pipeline, "extractor": extractor}}}}))
    concept = lambda name, ratio: {"concept": name, "ratio": ratio, "q": 0.01}  # noqa: E731
    (rc / "cards.json").write_text(json.dumps({"heldout": [
        {"cluster": 0, "concepts": [concept("weather=fog", 3.0), concept("weather=clear", 0.2),
                                    concept("size=small", 1.5), concept("color=red", 1.2), concept("color=blue", 1.1)]},
        {"cluster": 1, "concepts": []}]}))
    ex = root / "explain"
    if explain:
        ex.mkdir()
        row = lambda c, m, r, s, v, shown, d: {"cluster": c, "method": m, "rank": r, "sentence": s,  # noqa: E731
                                               "validated": v, "shown": shown, "default": d}
        pq.write_table(pa.Table.from_pylist([
            row(0, "fpdiff", 1, "a photo of a hexagon in fog", True, True, True),
            row(0, "fpdiff", 2, "a photo of a small hexagon", True, False, True),
            row(0, "tops", 1, "a photo of something else", True, True, False),
            row(1, "fpdiff", 1, "an unvalidated sentence", False, False, True),
            row(1, "fpdiff", 2, "not shown", None, False, True)]), ex / "sentences.parquet")
        (ex / "summary.json").write_text(json.dumps({"source": f"rootcause {pipeline}", "method": "fpdiff"}))
    return rc, ex, calib


def test_from_outputs_reads_clusters_sentences_and_concepts(tmp_path):
    rc, ex, calib = write_outputs(tmp_path)
    modes = FailureModes.from_outputs(rc, ex, calib)
    assert (modes.pipeline, modes.space, modes.note) == ("vlm/umap/kmeans", "vlm", None)
    assert sorted(zip(modes.cluster.tolist(), modes.prediction.tolist(), modes.members.tolist())) == [
        (0, 1, 30), (0, 2, 20), (1, 2, 40)]  # calib rows only: the test rows of cluster 1 add nothing
    assert modes.sentences == {0: "a photo of a hexagon in fog"}  # cluster 1 has no validated sentence
    assert modes.concepts == {0: ["weather=fog", "size=small", "color=red"], 1: []}
    (found,) = modes.match({"prediction": [2], "vlm_embedding": A[None].astype(np.float32)})
    assert found["cluster"] == 0 and found["close_enough"] and found["sentence"] == "a photo of a hexagon in fog"


def test_from_outputs_refuses_test_rows(tmp_path):
    rc, ex, calib = write_outputs(tmp_path)
    calib["split"] = np.array(["calib"] * (len(calib["id"]) - 1) + ["test"], object)
    with pytest.raises(ValueError, match="calib"):
        FailureModes.from_outputs(rc, ex, calib)


def test_missing_explain_means_no_sentences(tmp_path):
    rc, ex, calib = write_outputs(tmp_path, explain=False)
    said = []
    modes = FailureModes.from_outputs(rc, ex, calib, log=said.append)
    assert modes.sentences == {} and modes.concepts[0]
    assert any("explain" in s for s in said)
    assert FailureModes.from_outputs(rc, None, calib).match(
        {"prediction": [1], "vlm_embedding": A[None]})[0]["sentence"] is None


def test_image_extractor_falls_back_to_the_vlm_space(tmp_path):
    rc, ex, calib = write_outputs(tmp_path, extractor="backbone")
    said = []
    modes = FailureModes.from_outputs(rc, ex, calib, log=said.append)
    assert (modes.extractor, modes.space) == ("backbone", "vlm") and "backbone" in modes.note
    assert modes.columns == ("prediction", "vlm_embedding") and said
    assert modes.sentences == {0: "a photo of a hexagon in fog"}


def test_encoder_and_concepts_spaces(tmp_path):
    rc, ex, calib = write_outputs(tmp_path, extractor="encoder")
    modes = FailureModes.from_outputs(rc, ex, calib)
    assert modes.space == "encoder" and modes.columns == ("prediction", "features")
    assert modes.match({"prediction": [2], "features": A[None, ::-1]})[0]["cluster"] == 0


def test_concepts_space_carries_the_analysis(tmp_path):
    (tmp_path / "a").mkdir()
    rc, ex, calib = write_outputs(tmp_path / "a", extractor="concepts")
    rng = np.random.default_rng(7)
    analysis = {"concepts": rng.normal(size=(5, D)).astype(np.float32), "mean": np.zeros(5, np.float32),
                "std": np.full(5, 0.3, np.float32)}
    modes = FailureModes.from_outputs(rc, ex, calib, concepts=analysis)
    assert modes.space == "concepts" and modes.centroids.shape[1] == 5
    modes.save(tmp_path / "bundle")
    back = FailureModes.load(tmp_path / "bundle")
    np.testing.assert_array_equal(back.concept_embeddings, analysis["concepts"])
    batch = {"prediction": [1, 2], "vlm_embedding": np.stack([A, B]).astype(np.float32)}
    assert back.match(batch) == modes.match(batch)
    assert FailureModes.from_outputs(rc, ex, calib).space == "vlm"  # no analysis given: the fallback


def test_no_failure_modes_without_rootcause_or_enough_rows(tmp_path):
    said = []
    assert FailureModes.from_outputs(tmp_path / "nothing", None, {}, log=said.append) is None
    assert "rootcause" in said[-1]
    rc, ex, calib = write_outputs(tmp_path)
    assert FailureModes.from_outputs(rc, ex, calib, min_members=60, log=said.append) is None
    assert "60" in said[-1]
    (rc / "summary.json").write_text(json.dumps({"sets": {"adversarial": {}}}))
    assert FailureModes.from_outputs(rc, ex, calib, log=said.append) is None and "heldout" in said[-1]


# --- the scorecard's alerts section -----------------------------------------------------------------------------

def test_alerts_section_counts_flagged_errors_matched_to_the_holding_cluster():
    from conceptlens.world import Scenario

    water = Scenario("star_on_water", "spurious_correlation", ("star",), "background=water")
    fog = Scenario("hexagon_in_fog", "blind_spot", ("hexagon",), "weather=fog")
    # heldout failures: cluster 0 holds star_on_water, cluster 1 holds hexagon_in_fog, cluster 2 natural errors
    held = {"h0": ("star_on_water", 0), "h1": ("star_on_water", 0), "h2": ("star_on_water", 0),
            "h3": ("hexagon_in_fog", 1), "h4": ("hexagon_in_fog", 1), "h5": (None, 2), "h6": (None, 2)}
    # test rows: id -> (truth, wrong, verdict, cluster, close_enough)
    rows = {"t0": ("star_on_water", True, "likely-misclassified", 0, True),  # matched
            "t1": ("star_on_water", True, "likely-misclassified", 1, True),  # close to another cluster
            "t2": ("star_on_water", True, "likely-misclassified", 0, False),  # nearest right, not close enough
            "t3": ("star_on_water", True, "accept", 0, True),  # not flagged: left out
            "t4": ("star_on_water", False, "likely-misclassified", 0, True),  # not an error: left out
            "t5": ("hexagon_in_fog", True, "likely-adversarial", -1, False),  # no candidate
            "t6": ("hexagon_in_fog", True, "likely-misclassified", 1, True),  # matched
            "t7": (None, True, "likely-misclassified", 2, True),  # natural, close enough to some cluster
            "t8": (None, False, "accept", -1, False)}
    ids = list(held) + list(rows)
    truth = Truth(np.array(ids, object), np.array([held[i][0] if i in held else rows[i][0] for i in ids], object),
                       np.zeros((len(ids), 1), bool), [water, fog], ["background=water"])
    clusters = pa.table({"set": ["heldout"] * len(held), "id": list(held), "pipeline": ["vlm/umap/kmeans"] * len(held),
                         "cluster": [c for _, c in held.values()]})
    pipelines = pa.table({"set": ["heldout"], "pipeline": ["vlm/umap/kmeans"], "index": [0.9], "chosen": [True]})
    from conceptlens.evaluation.clusters import rootcause_section

    section = rootcause_section(clusters, pipelines, dict(zip(held, truth.scenario_of(np.array(list(held), object)))),
                                [water, fog])
    assert holding_clusters(section) == {"star_on_water": 0, "hexagon_in_fog": 1}
    alerts = pa.table({"id": list(rows), "verdict": [r[2] for r in rows.values()],
                       "cluster": pa.array([r[3] for r in rows.values()], pa.int64()),
                       "close_enough": [r[4] for r in rows.values()]})
    out = alerts_section(alerts, {i: r[1] for i, r in rows.items()}, truth, [water, fog], section, clusters)
    assert out["scenarios"]["star_on_water"] == {"holding_cluster": 0, "errors": 3 + 1, "flagged": 3, "matched": 1,
                                                 "other": 1, "none_close_enough": 1, "no_candidate": 0,
                                                 "matched_share": pytest.approx(1 / 3), "dominated_clusters": [0],
                                                 "matched_dominated": 1, "matched_dominated_share": pytest.approx(1 / 3)}
    assert out["scenarios"]["hexagon_in_fog"] == {"holding_cluster": 1, "errors": 2, "flagged": 2, "matched": 1,
                                                  "other": 0, "none_close_enough": 1, "no_candidate": 1,
                                                  "matched_share": 0.5, "dominated_clusters": [1],
                                                  "matched_dominated": 1, "matched_dominated_share": 0.5}
    # a scenario split over two clusters it dominates: a match to either counts as dominated, to one as held
    split = pa.table({"set": ["heldout"] * 4, "id": ["h0", "h1", "h3", "h4"], "pipeline": ["vlm/umap/kmeans"] * 4,
                      "cluster": [0, 1, 1, 1]})
    assert dominated_clusters(split, "vlm/umap/kmeans", truth) == {"star_on_water": {0}, "hexagon_in_fog": {1}}
    assert out["natural"] == {"errors": 1, "flagged": 1, "close_enough": 1, "none_close_enough": 0, "no_candidate": 0}
    assert out["overall"] == {"errors": 6, "flagged": 5, "matched": 2, "none_close_enough": 2,
                              "matched_share": 0.4}
    json.dumps(out)
    as_dict = {k: alerts[k].to_pylist() for k in alerts.column_names}
    assert alerts_section(as_dict, {i: r[1] for i, r in rows.items()}, truth, [water, fog], section, clusters) == out
    with pytest.raises(ValueError, match="close_enough"):
        alerts_section({k: v for k, v in as_dict.items() if k != "close_enough"}, {}, truth, [water], section)
