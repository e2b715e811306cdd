"""The analysis library on synthetic data with a known answer: aligner, heatmaps, BH, localisation, concepts."""
import numpy as np
import pytest

from conceptlens.models import concept_groups
from conceptlens.semantic.aligner import Aligner, AlignerFit, HeldOutR2
from conceptlens.semantic.analysis import ConceptAnalysis
from conceptlens.models.concepts import fill, load_concepts
from conceptlens.semantic.heatmaps import HeatmapAccumulator, matrix, responsible_concepts
from conceptlens.semantic.localize import localize
from conceptlens.semantic.scoring import ConceptScorer


def test_streaming_aligner_recovers_an_affine_map_and_its_r2():
    rng = np.random.default_rng(0)
    W, b = rng.normal(size=(16, 8)), rng.normal(size=8)
    z = rng.normal(size=(2000, 16))
    e = z @ W + b + 0.1 * rng.normal(size=(2000, 8))
    fit = AlignerFit()
    for i in range(0, 2000, 300):  # batches of uneven size
        fit.update(z[i:i + 300], e[i:i + 300])
    aligner = fit.solve(ridge=1e-6)
    assert np.allclose(aligner.W, W, atol=0.02) and np.allclose(aligner.b, b, atol=0.02)
    residual = ((aligner(z) - e) ** 2).sum()
    assert aligner.r2 == pytest.approx(1 - residual / ((e - e.mean(0)) ** 2).sum(), abs=1e-6)
    held_out = HeldOutR2(aligner)
    held_out.update(z[:500], e[:500])
    held_out.update(z[500:], e[500:])
    assert held_out.value == pytest.approx(aligner.r2, abs=1e-4)


def test_aligner_round_trips(tmp_path):
    a = Aligner(np.ones((3, 2), np.float32), np.zeros(2, np.float32), 0.5)
    a.save(tmp_path / "a.npz")
    b = Aligner.load(tmp_path / "a.npz")
    assert np.array_equal(a.W, b.W) and b.r2 == 0.5


def planted(n=4000, seed=0):
    """Class 1 fails exactly when concept 2 is present; everything else is noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    scores = rng.normal(size=(n, 4))
    present = rng.random(n) < 0.3
    scores[present, 2] += 2.0
    predictions = labels.copy()
    predictions[(labels == 1) & present] = 0
    return labels, predictions, scores


def test_differential_heatmap_blames_the_planted_concept_only():
    labels, predictions, scores = planted()
    acc = HeatmapAccumulator(["a", "b", "c"], ["w", "x", "y", "z"])
    for i in range(0, len(labels), 512):
        acc.update(scores[i:i + 512], labels[i:i + 512], predictions[i:i + 512])
    acc.freeze()
    for i in range(0, len(labels), 512):
        acc.update_presence(scores[i:i + 512], labels[i:i + 512], predictions[i:i + 512])
    table = acc.tables(alpha=0.05)
    blamed = responsible_concepts(table)
    assert [r.concept for r in blamed["b"]] == ["y"] and blamed["b"][0].direction == "present in failures"
    assert blamed["a"] == [] and blamed["c"] == []  # no failures there: nothing testable, nothing blamed
    z = (scores - scores.mean(0)) / scores.std(0, ddof=1)
    gt = matrix(table, "ground_truth", ["a", "b", "c"], ["w", "x", "y", "z"])
    assert np.allclose(gt[1], z[labels == 1].mean(0), atol=1e-9)
    freq = matrix(table, "binarized", ["a", "b", "c"], ["w", "x", "y", "z"])
    assert freq[1, 2] == pytest.approx((z[labels == 1, 2] > 1.0).mean())
    low = matrix(table, "ground_truth", ["a", "b", "c"], ["w", "x", "y", "z"], "low")
    assert np.all(low < gt)


def test_a_group_of_exclusive_values_has_one_present_value_per_row():
    """``lighting=bright``/``lighting=dark`` form a group: the higher raw score wins, even where the other value's
    z-score is higher (it is rarer in these rows); ``wet`` stands alone and needs z > threshold."""
    assert concept_groups(["lighting=bright", "wet", "lighting=dark", "size=small"]) == [[0, 2]]
    acc = HeatmapAccumulator(["a"], ["lighting=bright", "wet", "lighting=dark"])
    scores = np.array([[0.30, 0.0, 0.10], [0.30, 0.0, 0.10], [0.30, 0.0, 0.10], [0.20, 0.9, 0.25]])
    acc.update(scores, np.zeros(4, int), np.zeros(4, int))
    acc.freeze()
    present = acc.presence(np.array([[0.21, 0.9, 0.20], [0.20, 0.0, 0.25]]))
    assert present.tolist() == [[True, True, False], [False, False, True]]


def test_without_a_planted_cause_nothing_is_significant():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 3000)
    predictions = np.where(rng.random(3000) < 0.2, 1 - labels, labels)  # errors at random
    acc = HeatmapAccumulator(["a", "b"], [f"c{i}" for i in range(20)])
    acc.update(rng.normal(size=(3000, 20)), labels, predictions)
    acc.freeze()
    assert not any(acc.tables()["significant"].to_pylist())


def test_fault_localisation_uses_the_aligned_zero_shot():
    labels = np.array([0, 1, 2, 2])
    predictions = np.array([0, 0, 1, 2])
    faults = localize(labels, predictions, aligned_zero_shot=np.array([0, 1, 0, 2]), vlm_zero_shot=np.array([0, 1, 2, 2]))
    assert faults["index"].tolist() == [1, 2]
    assert faults["fault"].tolist() == ["head", "encoder"]
    assert faults["oracle_recognises"].tolist() == [True, True]


def test_concept_analysis_streams_scored_batches():
    labels, predictions, scores = planted(2000)
    rng = np.random.default_rng(2)
    batch = {"label_index": labels, "prediction": predictions, "aligned_scores": scores,
             "vlm_scores": scores + 0.1 * rng.normal(size=scores.shape), "aligned_zero_shot": labels,
             "vlm_zero_shot": labels}
    analysis = ConceptAnalysis(["a", "b", "c"], ["w", "x", "y", "z"])
    analysis.update(batch)
    analysis.freeze()
    analysis.update_presence(batch)
    result = analysis.result()
    assert result.rows == 2000 and result.misclassified == int((labels != predictions).sum())
    assert result.faults["overall"]["head_share"] == 1.0 and result.zero_shot["aligned"] == 1.0
    assert result.responsible["vlm"]["b"][0].concept == "y"


def test_scorer_gives_cosines_and_zero_shot_of_both_sources():
    rng = np.random.default_rng(3)
    concepts = np.eye(4, dtype=np.float32)
    scorer = ConceptScorer(Aligner(np.eye(4, dtype=np.float32) * 2, np.zeros(4, np.float32)), concepts, concepts[:3])
    features = rng.normal(size=(5, 4)).astype(np.float32)
    out = scorer({"features": features, "vlm_embedding": features / np.linalg.norm(features, axis=1, keepdims=True)})
    assert np.allclose(out["aligned_scores"], out["vlm_scores"], atol=1e-6)
    assert np.allclose(np.linalg.norm(out["aligned_scores"], axis=1), 1, atol=1e-5)
    assert out["aligned_zero_shot"].tolist() == features[:, :3].argmax(1).tolist()


def test_concept_sets_load_bundled_and_reject_bad_files(tmp_path):
    world = load_concepts("conceptworld")
    assert len(world.names) == 22 and "background=water" in world.names
    assert world.prompts()["background=water"] == ["a photo of an object on water"]
    assert len(load_concepts("rival10").names) == 18
    assert fill(["a photo of {article} {}"], ["owl", "cat"]) == ["a photo of an owl", "a photo of a cat"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("concepts: {wet: [wet thing]}\ntemplate: ['{}']\n")
    with pytest.raises(ValueError, match="template"):
        load_concepts(bad)
    with pytest.raises(ValueError, match="bundled"):
        load_concepts("nonexistent")
    assert world.absence == "object"
    custom = tmp_path / "custom.yaml"
    custom.write_text("concepts: {wet: [wet garment]}\nabsence: garment\n")
    assert load_concepts(custom).absence == "garment"
    custom.write_text("concepts: {wet: [wet garment]}\nabsence: ''\n")
    with pytest.raises(ValueError, match="absence"):
        load_concepts(custom)
