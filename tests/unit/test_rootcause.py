"""Root-cause clustering's last two stages on synthetic failures whose causes are known: well separated blobs
(one of them rare) must come out as their own clusters for every clustering method, chosen by the internal
index alone; and the purity / coverage scores worked out by hand."""
import numpy as np
import pytest

from conceptlens.evaluation.clusters import cluster_scores
from conceptlens.rootcause import CLUSTERINGS, NOISE, cluster, internal_index, reduce


def failures(seed=0):
    """Three causes in 32-d features: 300 + 200 rows and a rare one of 25, plus 40 scattered natural errors."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 6, (3, 32))
    sizes = (300, 200, 25)
    x = np.concatenate([c + rng.normal(0, 0.5, (n, 32)) for c, n in zip(centres, sizes)] +
                       [rng.normal(0, 6, (40, 32))])
    truth = np.array(sum(([f"cause{i}"] * n for i, n in enumerate(sizes)), []) + [None] * 40, object)
    return x.astype(np.float32), truth


@pytest.mark.parametrize("method", CLUSTERINGS)
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
    embedded = reduce(x, "umap", components=2, fit_rows=200)  # 200 fitted, the other 365 transformed
    assert embedded.shape == (len(x), 2) and np.isfinite(embedded).all()
    found = cluster(embedded, "dbscan")
    assert cluster_scores(found.labels, failures()[1])["planted_only"]["coverage"] == 1.0
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
