"""`conceptlens analyze` on the demo's ConceptWorld, scored against the planted truth."""
import json

import mlflow
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from conceptlens.config import load_config
from conceptlens.jobs import analyze
from conceptlens.world import CLASSES

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def out(demo_done, demo_run):
    assert demo_done[0] == 0
    return demo_run / "demo" / "analyze"


@pytest.fixture(scope="module")
def summary(out):
    return json.loads((out / "summary.json").read_text())


def planted(demo_config, kinds=("spurious_correlation", "blind_spot")):
    """(class, concept, scenario kind) for every planted scenario of the given kinds."""
    return [(cls, s.attribute, s.kind) for s in load_config([demo_config]).world.scenarios if s.kind in kinds
            for cls in s.classes]


# the planted concept's rank among its class's blamed concepts, at most: a spurious correlation is first on every
# world and model seed measured; a blind spot's is 2nd at model seed 1 (lighting=bright first for hexagon), so it is
# asserted as a floor (a rank 1 worse), its goal (rank 1) reported by test_fidelity. Ranks count findings: a
# two-valued group's two values (lighting=bright ×7.5 and lighting=dark ×0.13, the same rows) are one, as the
# scorecard counts them (a fresh clone's model put weather=fog 4th by concept, 3rd by finding, behind both lighting
# values and weather=clear)
WORST_RANK = {"spurious_correlation": 1, "blind_spot": 3}


def findings(blamed: list[dict]) -> list[dict]:
    """The blamed concepts with a two-valued group's second value dropped where its partner came first."""
    from conceptlens.evaluation.ground_truth import concept_names, two_valued_partner

    seen, out = set(), []
    for r in blamed:
        if two_valued_partner(r["concept"], concept_names()) not in seen:
            out.append(r)
        seen.add(r["concept"])
    return out


@pytest.mark.parametrize("source", ["aligned", "vlm"])
def test_the_planted_concept_is_among_the_top_responsible_concepts(summary, demo_config, source):
    for cls, concept, kind in planted(demo_config):
        blamed = summary["responsible"][source][cls]
        assert blamed, (cls, "no significant concept")
        top = findings(blamed)[:WORST_RANK[kind]]
        named = [r["concept"] for r in top]
        assert concept in named, (cls, blamed[:4])
        assert top[named.index(concept)]["q"] < 0.05


def test_blame_points_the_right_way(summary, demo_config):
    for cls, concept, kind in planted(demo_config):
        top = next(r for r in summary["responsible"]["aligned"][cls] if r["concept"] == concept)
        # spurious: the class fails without its usual background; blind spot: it fails in the unseen condition
        assert top["direction"] == ("missing in failures" if kind == "spurious_correlation" else "present in failures")


def test_the_trust_check_backs_the_demo(summary, demo_config):
    """The demo's tiny CLIP knows the classes and tells every planted concept apart from its absence, so nothing
    planted is hidden as unreliable (it may flag concepts it cannot see, e.g. `pattern=plain`)."""
    trust = summary["trust"]
    assert trust["sees_classes"] and trust["skill"] > 0.5
    assert len(trust["unreliable_concepts"]) <= 4
    for cls, concept, _ in planted(demo_config, ("spurious_correlation", "blind_spot", "rare_subgroup")):
        assert trust["absence_r"][concept] < trust["max_absence_r"], (concept, trust["absence_r"][concept])
        assert summary["responsible"]["aligned"][cls][0]["reliable"]


def test_aligner_and_localisation_are_reported(summary):
    aligner = summary["aligner"]
    assert aligner["fit_rows"] == 3000 and 0.3 < aligner["r2_held_out"] <= aligner["r2_fit"] + 0.05
    assert summary["zero_shot_accuracy"]["vlm"] >= 0.8
    faults = summary["faults"]["overall"]
    assert faults["misclassified"] == summary["misclassified"] > 0
    assert faults["encoder"] + faults["head"] == faults["misclassified"]
    assert sum(c["misclassified"] for c in summary["faults"]["per_class"].values()) == faults["misclassified"]


def test_tables_figures_and_mlflow(out, demo_run):
    heatmaps = pq.read_table(out / "heatmaps_aligned.parquet")
    kinds = set(heatmaps.column("kind").to_pylist())
    assert {"ground_truth", "output", "correct", "incorrect", "differential", "binarized"} <= kinds
    diff = heatmaps.filter(pc.equal(heatmaps["kind"], "differential"))
    assert diff.num_rows == len(CLASSES) * 22
    scores = pq.read_table(out / "scores.parquet")
    assert scores.num_rows == 6000 and len(scores.column("aligned_scores")[0]) == 22
    faults = pq.read_table(out / "faults.parquet")
    assert set(faults.column("fault").to_pylist()) <= {"encoder", "head"}
    assert set(faults.column("split").to_pylist()) == {"calib", "test"}
    figures = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert figures == sorted(f"{s}_{k}.png" for s in ("aligned", "vlm") for k in ("differential", "risk_ratio"))
    assert all((out / "figures" / f).stat().st_size > 10_000 for f in figures)
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{demo_run / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("conceptlens").experiment_id],
                              filter_string="tags.command = 'analyze' and tags.`conceptlens.run` = 'demo'")
    assert runs and runs[0].data.metrics["aligner.r2_fit"] > 0
    artifacts = {a.path for a in client.list_artifacts(runs[0].info.run_id)}
    assert {"summary.json", "heatmaps_aligned.parquet", "figures"} <= artifacts


def test_a_missing_embeddings_table_is_a_clear_error(tmp_path, capsys):
    assert analyze.main([f"run.root={tmp_path}", "run.name=none"]) == 2
    assert "run `conceptlens embed` first" in capsys.readouterr().err
