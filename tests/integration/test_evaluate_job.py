"""`conceptlens evaluate` on the demo run (the demo's last step): the scorecard's structure, and its numbers
recounted from the tables they come from. The fidelity goals are asserted in test_fidelity.py."""
import json
import shutil

import mlflow
import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from conceptlens.config import load_config
from conceptlens.evaluation.ground_truth import NO_TRUTH
from conceptlens.jobs import evaluate
from conceptlens.models import two_valued
from conceptlens.semantic import SOURCES

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_dir(demo_done, demo_run):
    assert demo_done[0] == 0
    return demo_run / "demo"


@pytest.fixture(scope="module")
def card(run_dir):
    return json.loads((run_dir / "evaluate" / "scorecard.json").read_text())


def scenarios(demo_config):
    return load_config([demo_config]).world.scenarios


def test_the_demo_ends_with_the_scorecard(demo_done, card):
    assert "scorecard of run 'demo' against the world's truth" in demo_done[1]
    assert "runtime filter (test)" in demo_done[1]
    assert not card["absent"] and {"world", "semantic", "localisation", "runtime", "rootcause", "neurons"} <= set(card)


def test_the_demo_scenarios_are_planted_with_the_gaps_world_measured(card, run_dir, demo_config):
    names = [s.name for s in scenarios(demo_config)]
    assert card["world"]["planted"] == names and card["world"]["skipped"] == []
    world = json.loads((run_dir / "world" / "metrics.json").read_text())["classifier"]["slices"]
    for name in names:  # world predicted the test split itself; evaluate reads embed's predictions of it
        s = card["world"]["scenarios"][name]
        assert s["n"] == world[name]["n"] and s["gap"] >= 0.20
        assert s["accuracy"] == pytest.approx(world[name]["accuracy"], abs=1.5 / s["n"])


def called_cells(run_dir, source, reliable_only=False) -> set:
    t = pq.read_table(run_dir / "analyze" / f"heatmaps_{source}.parquet")
    t = t.filter(pc.and_(pc.equal(t["kind"], "risk_ratio"), t["significant"]))
    return {(r["class"], r["concept"]) for r in t.to_pylist() if r["reliable"] or not reliable_only}


def folded(cells: set, concepts: list[str]) -> set:
    """A two-valued group is one finding: its second value's cells counted as its first value's."""
    first = {concepts[j]: concepts[i] for j, i in two_valued(concepts).items()}
    return {(cls, first.get(concept, concept)) for cls, concept in cells}


@pytest.mark.parametrize("source", SOURCES)
def test_precision_and_recall_recount_from_the_tables(card, run_dir, source):
    truth = pq.read_table(run_dir / "evaluate" / "ground_truth.parquet")
    concepts = list(dict.fromkeys(truth["concept"].to_pylist()))
    true = {(r["class"], r["concept"]) for r in truth.to_pylist() if r["significant"]}
    assert card["semantic"]["truth"] == {"cells": truth.num_rows, "significant": len(true)}
    true = folded(true, concepts)
    for scope, reliable_only in (("all", False), ("reliable", True)):
        called = folded(called_cells(run_dir, source, reliable_only), concepts)
        got = card["semantic"][source][scope]
        assert (got["called"], got["truly_significant"], got["hits"]) == (len(called), len(true), len(called & true))
        assert got["precision"] == pytest.approx(len(called & true) / len(called))
        assert got["recall"] == pytest.approx(len(called & true) / len(true))
        assert 0 <= got["precision"] <= 1 and 0 <= got["recall"] <= 1 and 0 <= got["direction_agreement"] <= 1
        assert got["top_cause"]["top_is_true_cause"] <= got["top_cause"]["classes_with_true_cause"] <= 10
    assert -1 <= card["semantic"][source]["rank_correlation"] <= 1


def test_the_ground_truth_heatmap_counts_the_analysed_rows(card, run_dir):
    truth = pq.read_table(run_dir / "evaluate" / "ground_truth.parquet").to_pylist()
    scores = pq.read_table(run_dir / "analyze" / "scores.parquet", columns=["id", "label", "label_index", "prediction"])
    world = pq.read_table(run_dir / "world" / "truth.parquet", columns=["id", "background_water"])
    water = dict(zip(world["id"].to_pylist(), world["background_water"].to_pylist()))
    labels = np.array(scores["label"].to_pylist())
    failed = scores["label_index"].to_numpy() != scores["prediction"].to_numpy()
    assert card["semantic"]["rows"] == scores.num_rows == 6000
    for cell in truth:  # every cell splits its class's analysed rows into present and absent
        mine = labels == cell["class"]
        assert cell["n_present"] + cell["n_absent"] == mine.sum()
        assert cell["failed_present"] + cell["failed_absent"] == (failed & mine).sum()
    # one cell recounted from the world's truth: stars fail off water (the planted spurious correlation)
    on_water = np.array([water[i] for i in scores["id"].to_pylist()])
    star = next(c for c in truth if c["class"] == "star" and c["concept"] == "background=water")
    stars = labels == "star"
    assert star["failed_present"] == (failed & stars & on_water).sum()
    assert star["failed_absent"] == (failed & stars & ~on_water).sum()
    assert star["significant"] and star["value"] < 0


def test_planted_concepts_rank_at_the_top_in_the_aligned_source(card, demo_config):
    from test_analyze_job import WORST_RANK  # the floors the analyze test asserts: spurious first, a blind spot top 3

    for s in scenarios(demo_config):
        if s.kind not in WORST_RANK:
            continue
        for cls in s.classes:
            rank = card["semantic"]["aligned"]["planted"][s.name][cls]
            assert rank["concept"] == s.attribute and 1 <= rank["rank"] <= WORST_RANK[s.kind], (s.name, rank)


def test_localisation_and_runtime_add_up(card, run_dir):
    faults = pq.read_table(run_dir / "analyze" / "faults.parquet", columns=["split"])
    local = card["localisation"]["scenarios"]
    # scored on the errors outside the aligner's fit (calib) only; every demo scenario is planted
    assert card["localisation"]["in_sample"] is False
    assert sum(s["errors"] for s in local.values()) == pc.sum(pc.not_equal(faults["split"], "calib")).as_py() > 0
    for s in local.values():
        assert s["encoder"] + s["head"] == s["errors"]
    # where the kind fixes the fault's site, the share blamed there; a blind spot in fog: the encoder
    assert local["hexagon_in_fog"]["truth"] == "encoder"
    assert local["hexagon_in_fog"]["agreement"] == local["hexagon_in_fog"]["encoder_share"]
    assert local["star_on_water"]["truth"] is None and local["star_on_water"]["agreement"] is None
    runtime = card["runtime"]["scenarios"]
    monitor = json.loads((run_dir / "monitor" / "metrics.json").read_text())
    # the overall row is monitor's own misclassification AUROC: same bundle, same clean test rows
    assert runtime["overall"]["auroc"] == pytest.approx(monitor["detection"]["concept_filter.misclassified"]["auroc"])
    assert runtime["overall"]["errors"] == round((1 - monitor["test_accuracy"]) * runtime["overall"]["n"])
    world = card["world"]["scenarios"]
    for name in card["world"]["planted"]:
        assert runtime[name]["errors"] == round(world[name]["n"] * (1 - world[name]["accuracy"]))
        assert 0.5 <= runtime[name]["auroc"] <= 1 and 0 <= runtime[name]["flagged"] <= 1
    assert runtime["natural"]["errors"] + sum(runtime[n]["errors"] for n in card["world"]["planted"]) == \
        runtime["overall"]["errors"]


def test_the_scorecard_is_in_mlflow(card, demo_run):
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{demo_run / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("conceptlens").experiment_id],
                              filter_string="tags.command = 'evaluate' and tags.`conceptlens.run` = 'demo' "
                                            "and attributes.status = 'FINISHED'")
    assert runs
    metrics = runs[0].data.metrics
    assert metrics["semantic.aligned.all.precision"] == pytest.approx(card["semantic"]["aligned"]["all"]["precision"])
    assert metrics["runtime.scenarios.star_on_water.auroc"] == pytest.approx(
        card["runtime"]["scenarios"]["star_on_water"]["auroc"])
    assert {"scorecard.json", "ground_truth.parquet"} <= {a.path for a in client.list_artifacts(runs[0].info.run_id)}


def test_sections_of_commands_that_did_not_run_are_absent(run_dir, demo_config, tmp_path, capsys):
    for step in ("world", "embed"):
        shutil.copytree(run_dir / step, tmp_path / "demo" / step)
    assert evaluate.main(["--config", demo_config, f"run.root={tmp_path}"]) == 0
    card = json.loads((tmp_path / "demo" / "evaluate" / "scorecard.json").read_text())
    assert set(card["absent"]) == {"semantic", "localisation", "runtime", "rootcause", "explain", "neurons"} \
        and card["world"]["planted"]
    out = capsys.readouterr().out
    assert "semantic: absent, no `analyze` outputs" in out and "runtime: absent, no filter bundle" in out
    assert "rootcause: absent, no `rootcause` outputs" in out and "explain: absent, no `explain` outputs" in out
    assert "neurons: absent, no `neurons` outputs" in out


def test_a_run_folder_written_before_the_truth_had_its_own_file_is_still_scored(run_dir, card, demo_config,
                                                                                  tmp_path):
    """An old run's world folder: one manifest holding the data and the truth, no truth.parquet."""
    for step in ("world", "embed"):
        shutil.copytree(run_dir / step, tmp_path / "demo" / step)
    world = tmp_path / "demo" / "world"
    manifest, truth = pq.read_table(world / "manifest.parquet"), pq.read_table(world / "truth.parquet")
    assert manifest["id"].equals(truth["id"])
    old = manifest
    for name in truth.column_names[1:]:
        old = old.append_column(name, truth[name])
    pq.write_table(old, world / "manifest.parquet")
    (world / "truth.parquet").unlink()
    assert evaluate.main(["--config", demo_config, f"run.root={tmp_path}"]) == 0
    scored = json.loads((tmp_path / "demo" / "evaluate" / "scorecard.json").read_text())
    assert scored["world"] == card["world"] and scored["world"]["planted"]
    assert not (world / "truth.parquet").exists()  # read where it is: evaluate leaves the run's folder as it was


def test_a_run_without_a_world_is_a_clear_error(tmp_path, capsys):
    assert evaluate.main([f"run.root={tmp_path}", "run.name=mine"]) == 2
    err = capsys.readouterr().err.strip()
    assert NO_TRUTH in err and "\n" not in err
    assert not (tmp_path / "mine").exists()


def test_the_worlds_truth_declared_as_a_users_table_is_the_same_truth(run_dir, demo_config, tmp_path):
    """ConceptWorld is one provider of truth: its attribute columns written out as a user's CSV, its scenarios
    declared as slices, give the same concepts, the same presence and, from each row's class alone, the same slice
    rows as the generator planted (which the world's own truth records)."""
    from conceptlens.config import SliceConfig, TruthConfig
    from conceptlens.evaluation.ground_truth import Truth
    from conceptlens.world import ATTRIBUTE_GROUPS, read_manifest, read_truth

    world = Truth.of_world(run_dir / "world")
    groups = {g.name: list(g.values) for g in ATTRIBUTE_GROUPS}
    table = read_truth(run_dir / "world").select(["id", *groups])
    table.to_pandas().to_csv(tmp_path / "truth.csv", index=False)
    slices = [SliceConfig(name=s.name, kind=s.kind, classes=list(s.classes), attribute=s.attribute,
                          both_sides=s.other_strength is not None) for s in scenarios(demo_config)]
    manifest = read_manifest(run_dir / "world")
    labels = dict(zip(manifest["id"].to_pylist(), manifest["label"].to_pylist()))
    declared = Truth.declared(TruthConfig(table=str(tmp_path / "truth.csv"), groups=groups, slices=slices), labels)
    assert declared.concepts == world.concepts and list(declared.ids) == list(world.ids)
    assert np.array_equal(declared.present, world.present)
    assert list(declared.scenario) == list(world.scenario)
    assert [s.name for s in declared.scenarios] == [s.name for s in world.scenarios]
