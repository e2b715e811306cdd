"""Root-cause clustering's last two stages on synthetic failures whose causes are known: well separated blobs
(one of them rare) must come out as their own clusters for every clustering method, chosen by the internal
index alone; and the purity / coverage scores worked out by hand."""
import numpy as np
import pytest

from conceptlens.evaluation.clusters import cluster_scores
from conceptlens.rootcause import (CLUSTERINGS, HUDD, NOISE, Clustering, Pipeline, PipelineResult, add_concepts,
                                   build_cards, choose, cluster, describe, grid, internal_index, reduce, with_labels)


def failures(seed=0):
    """Three causes in 32-d features: 300 + 200 rows and a rare one of 25, plus 40 scattered natural errors."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 6, (3, 32))
    sizes = (300, 200, 25)
    x = np.concatenate([c + rng.normal(0, 0.5, (n, 32)) for c, n in zip(centres, sizes)] +
                       [rng.normal(0, 6, (40, 32))])
    truth = np.array(sum(([f"cause{i}"] * n for i, n in enumerate(sizes)), []) + [None] * 40, object)
    return x.astype(np.float32), truth


@pytest.mark.parametrize("method", [m for m in CLUSTERINGS if m != "hudd"])  # hudd: its own test below
def test_each_clustering_finds_every_cause_including_the_rare_one(method):
    x, truth = failures()
    points = reduce(x, "pca", components=5)
    found = cluster(points, method, max_clusters=8)
    scores = cluster_scores(found.labels, truth)["planted_only"]
    assert scores["coverage"] == 1.0 and scores["purity"] >= 0.95, (method, found.params, scores)
    assert scores["scenarios"]["cause2"]["recall"] >= 0.9  # the rare cause has a cluster of its own
    assert found.index == max(i for _, i in found.tried) and len(found.tried) >= 2


def test_the_index_prefers_the_true_partition_and_penalises_noise():
    x, truth = failures()
    true = np.array([{"cause0": 0, "cause1": 1, "cause2": 2}.get(t, 3) for t in truth])
    merged = np.where(true == 2, 1, true)
    assert internal_index(x, true) > internal_index(x, merged)
    mostly_noise = np.where(np.arange(len(x)) % 4 == 0, true, NOISE)
    assert internal_index(x, mostly_noise) < internal_index(x, true)
    assert internal_index(x, np.zeros(len(x), int)) == -1.0


def test_reductions_keep_rows_and_fit_on_a_sample():
    x, _ = failures()
    assert reduce(x, "none").shape == x.shape
    pca = reduce(x, "pca", components=4, fit_rows=100)
    assert pca.shape == (len(x), 4) and pca.dtype == np.float32
    # UMAP (numba compiles it for about 40 s in a fresh process) is fitted on a sample in
    # tests/integration/test_rootcause_job.py, in Ray workers that have compiled it already
    with pytest.raises(ValueError, match="reduction 'tsne'"):
        reduce(x, "tsne")
    with pytest.raises(ValueError, match="clustering 'spectral'"):
        cluster(x, "spectral")


def test_purity_and_coverage_by_hand():
    """Cluster 0: 3 × a + 1 × b (purity 0.75); cluster 1: 2 × b (1.0); noise: one natural, one b.
    b dominates cluster 1 with 2 of its 4 rows; natural dominates nothing."""
    labels = np.array([0, 0, 0, 0, 1, 1, NOISE, NOISE])
    scenario = np.array(["a", "a", "a", "b", "b", "b", None, "b"], object)
    both = cluster_scores(labels, scenario)
    planted, natural = both["planted_only"], both["with_natural"]
    assert planted["purity"] == pytest.approx((0.75 + 1.0) / 2) and planted["coverage"] == 1.0
    assert planted["scenarios"]["b"] == {"rows": 4, "cluster": 1, "purity": 1.0, "recall": 0.5}
    assert planted["noise_share"] == pytest.approx(1 / 7) and planted["rows"] == 7
    assert natural["coverage"] == pytest.approx(2 / 3) and natural["scenarios"]["natural"]["cluster"] is None


def test_the_holding_cluster_counts_natural_errors():
    """The goal's measure: the cluster holding most of a scenario's failures, its purity with every failure in it
    counted (a class's cluster of mixed causes is as pure as its planted share, not 1)."""
    labels = np.array([0] * 10 + [1] * 6 + [NOISE] * 2)
    scenario = np.array(["fog"] * 6 + [None] * 4 + ["dark"] * 3 + [None] * 3 + ["fog", None], object)
    held = cluster_scores(labels, scenario)["holding"]
    assert held["fog"] == {"rows": 7, "cluster": 0, "size": 10, "held": 6, "purity": 0.6, "share": pytest.approx(6 / 7)}
    assert held["dark"] == {"rows": 3, "cluster": 1, "size": 6, "held": 3, "purity": 0.5, "share": 1.0}
    assert "natural" not in held
    assert cluster_scores(labels, scenario)["planted_only"]["purity"] == 1.0  # what the old goal saw
    lost = cluster_scores(np.array([NOISE, NOISE, 0]), np.array(["a", "a", None], object))["holding"]["a"]
    assert lost == {"rows": 2, "cluster": None, "size": 0, "held": 0, "purity": None, "share": 0.0}


def test_hudd_cuts_ward_at_the_knee():
    """HUDD's pipeline finds the three blobs' knee (k = 3 or 4 with the scattered natural errors) by itself."""
    x, truth = failures()
    found = cluster(reduce(x, "pca", components=5), "hudd", max_clusters=12)
    assert found.params["k"] in (3, 4) and len(found.tried) == 1
    assert cluster_scores(found.labels, truth)["planted_only"]["coverage"] == 1.0


def test_the_label_block_keeps_classes_apart():
    """Features scaled to unit RMS norm; one weight-1 block per label: two rows of different labels are at least
    √2 apart in the block alone; weight 0 leaves the features as they are."""
    x = np.random.default_rng(0).normal(5, 3, (50, 8)).astype(np.float32)
    labels = np.repeat([0, 2], 25)
    out = with_labels(x, labels, 3, 1.0)
    assert out.shape == (50, 11)
    assert np.sqrt((out[:, :8] ** 2).sum(1).mean()) == pytest.approx(1.0, rel=1e-4)
    assert (out[:25, 8] == 1).all() and (out[25:, 10] == 1).all() and (out[:, 9] == 0).all()
    assert with_labels(x, labels, 3, 0.0) is not None and np.array_equal(with_labels(x, labels, 3, 0.0), x)


def test_the_grid_lists_every_pipeline_once_and_rejects_unknown_steps():
    pipelines = grid(["vlm", "relevance"], ["none", "umap"], ["kmeans", "hudd"], hudd=True)
    assert len(pipelines) == 8 and Pipeline(*HUDD) in pipelines and len(set(pipelines)) == 8
    assert len(grid(["vlm", "relevance"], ["pca"], ["kmeans"], hudd=True)) == 3  # + HUDD's own
    assert Pipeline.parse("vlm/umap/dbscan") == Pipeline("vlm", "umap", "dbscan")
    with pytest.raises(ValueError, match=r"unknown reduction\(s\) \['tsne'\]"):
        grid(["vlm"], ["tsne"], ["kmeans"])
    with pytest.raises(ValueError, match="extractor/reduction/clustering"):
        Pipeline.parse("vlm-umap")


def test_the_default_choice_is_the_best_index_and_a_named_one_wins():
    results = [PipelineResult(Pipeline("vlm", "umap", m), Clustering(np.zeros(3, np.int64), i, {}), 0.0)
               for m, i in (("kmeans", 0.4), ("dbscan", 0.7), ("hdbscan", 0.7))]
    assert choose(results).pipeline.clustering == "dbscan"  # ties: the first
    assert choose(results, "vlm/umap/kmeans").clustering.index == 0.4
    with pytest.raises(ValueError, match="not in the grid"):
        choose(results, "vlm/pca/kmeans")
    encoder = PipelineResult(Pipeline("encoder", "none", "kmeans"), Clustering(np.zeros(3, np.int64), 0.1, {}), 0.0)
    assert choose(results + [encoder], avoid={"vlm"}) is encoder  # an untrusted VLM: its pipelines are never chosen
    assert choose(results, avoid={"vlm"}).pipeline.clustering == "dbscan"  # nothing else: the best of them
    assert choose(results + [encoder], "vlm/umap/kmeans", avoid={"vlm"}).clustering.index == 0.4  # named: as asked


def test_cards_name_the_concept_that_sets_a_cluster_apart():
    """Cluster 0 (class 1 mistaken for 2) shows concept 'wet' in 90 % of its rows, the correct rows of class 1 in
    10 %; cluster 1 shows nothing unusual. Only 'wet' is named, for cluster 0 only."""
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], [40, 40])
    true, predicted = np.repeat([1, 3], 40), np.repeat([2, 4], 40)
    present = np.zeros((80, 3), bool)
    present[:40, 0] = rng.random(40) < 0.9
    present[:, 1] = rng.random(80) < 0.5
    correct_true = np.repeat([1, 3], 200)
    correct_present = np.zeros((400, 3), bool)
    correct_present[:, 0] = rng.random(400) < 0.1
    correct_present[:, 1] = rng.random(400) < 0.5
    points = rng.normal(size=(80, 2))
    cards = build_cards(labels, points, true, predicted, [f"c{k}" for k in range(5)], exemplars=4)
    add_concepts(cards, labels, present, true, correct_present, correct_true, ["wet", "coin", "never"])
    by_cluster = {c.cluster: c for c in cards}
    assert by_cluster[0].pairs == [{"true": "c1", "predicted": "c2", "rows": 40}]
    assert [c["concept"] for c in by_cluster[0].concepts] == ["wet"] and by_cluster[1].concepts == []
    assert by_cluster[0].concepts[0]["ratio"] > 5 and len(by_cluster[0].exemplars) == 4
    assert set(by_cluster[0].exemplars) <= set(range(40))
    assert "c1→c2 (40)" in describe(by_cluster[0]) and "wet 88% vs 9%" in describe(by_cluster[0])


def test_failure_directions_rank_a_planted_cause_above_natural_errors():
    """Per class, errors vs correct rows: the cause most errors share (a shifted embedding) lies far along the
    class's direction, natural errors (no shift) near the correct rows; cross-fitted, so no row scores itself."""
    from conceptlens.rootcause import direction_features, direction_scores

    rng = np.random.default_rng(0)
    n = 400
    labels = np.repeat([0, 1], n // 2)
    x = rng.normal(size=(n, 16))
    cause = (rng.random(n) < 0.15) & (labels == 0)
    x[cause, 3] += 4.0  # the planted cause of class 0's errors
    natural = (rng.random(n) < 0.04) & ~cause
    wrong = cause | natural
    score = direction_scores(x, labels, wrong, seed=0)
    assert score.shape == (n, 1) and score.dtype == np.float32
    s = score[:, 0]
    assert s[cause].min() > np.median(s[natural & (labels == 0)])  # the cause ranks above natural errors
    assert np.mean(s[cause]) > np.mean(s[(labels == 0) & ~wrong]) + 1
    few = direction_scores(x[:20], np.zeros(20, int), np.arange(20) < 3)  # too few errors for a direction
    assert np.all(few == 0)
    side = direction_features(x, labels, wrong, seed=0)[:, 0]  # the feature: which side of the boundary, then order
    assert np.array_equal(side >= 0.5, s > 0) and np.all(np.abs(side - (s > 0)) <= 0.1)
    assert (side[cause] >= 0.5).mean() > 0.9 and (side[natural & (labels == 0)] >= 0.5).mean() < 0.5
