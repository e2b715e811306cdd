"""`conceptlens rootcause` end to end on the demo's failures (run by `conceptlens demo`): every pipeline kind ran
as a Ray task and is in the tables and in MLflow, a planted scenario comes out as a cluster of its own, the cards
name what sets their cluster apart, and bad settings are refused with the key named. The goals (purity,
coverage, rare subgroups) are asserted with the other fidelity goals (test_fidelity.py)."""
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from conceptlens.config import RootcauseConfig
from conceptlens.jobs import rootcause
from conceptlens.rootcause import HUDD

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def outputs(demo_done, demo_run):
    assert demo_done[0] == 0, demo_done[1][-3000:]
    folder = demo_run / "demo" / "rootcause"
    card = json.loads((demo_run / "demo" / "evaluate" / "scorecard.json").read_text())
    return folder, card


def test_every_pipeline_kind_ran_on_every_failure(outputs):
    folder, card = outputs
    defaults = RootcauseConfig()
    pipelines = pq.read_table(folder / "pipelines.parquet").to_pylist()
    assert {p["extractor"] for p in pipelines} == set(defaults.extractors)
    assert {p["reduction"] for p in pipelines} == set(defaults.reductions)
    assert {p["clustering"] for p in pipelines} == set(defaults.clusterings) | {"hudd"}
    assert "/".join(HUDD) in {p["pipeline"] for p in pipelines}
    assert sum(p["chosen"] for p in pipelines) == 1
    clusters = pq.read_table(folder / "clusters.parquet")
    failures = card["rootcause"]["failures"]
    assert clusters.num_rows == failures * len(pipelines)  # every failure in every pipeline
    found = [p for p in pipelines if p["clusters"] >= 2]
    assert len(found) >= 0.8 * len(pipelines), [p["pipeline"] for p in pipelines if p["clusters"] < 2]


def test_a_planted_scenario_is_a_cluster_of_its_own(outputs):
    _, card = outputs
    rc = card["rootcause"]
    chosen = rc["pipelines"][rc["chosen"]]["planted_only"]["scenarios"]
    own = {name: s for name, s in chosen.items() if s["cluster"] is not None and s["purity"] >= 0.9
           and s["recall"] >= 0.5}
    assert own, chosen


def test_cards_describe_the_chosen_clusters(outputs, demo_run):
    """A montage per cluster; the cluster the spurious correlation dominates names its attribute among the
    concepts that set it apart from the class's correct images."""
    folder, card = outputs
    cards = json.loads((folder / "cards.json").read_text())["heldout"]
    assert all((folder / "figures" / f"heldout_cluster_{c['cluster']}.png").stat().st_size > 1000 for c in cards)
    assert sum(c["size"] for c in cards) + round(card["rootcause"]["pipelines"][card["rootcause"]["chosen"]]
                                                 ["with_natural"]["noise_share"] * card["rootcause"]["failures"]) \
        == card["rootcause"]["failures"]
    world = json.loads((demo_run / "demo" / "world" / "config.json").read_text())["world"]
    chosen = card["rootcause"]["pipelines"][card["rootcause"]["chosen"]]["planted_only"]["scenarios"]
    for scenario in world["scenarios"]:
        if scenario["kind"] != "spurious_correlation" or chosen[scenario["name"]]["cluster"] is None:
            continue
        named = next(c for c in cards if c["cluster"] == chosen[scenario["name"]]["cluster"])
        assert scenario["attribute"] in [c["concept"] for c in named["concepts"]], named


def test_each_pipeline_is_a_nested_mlflow_run(outputs, demo_run):
    import mlflow

    folder, _ = outputs
    client = mlflow.MlflowClient(f"sqlite:///{demo_run / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("conceptlens")
    parent = client.search_runs([experiment.experiment_id],
                                "tags.`conceptlens.run` = 'demo' and tags.`conceptlens.command` = 'rootcause' and "
                                "tags.`conceptlens.kind` = 'command' and attributes.status = 'FINISHED'",
                                order_by=["attributes.start_time DESC"])[0]
    children = client.search_runs([experiment.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'", max_results=1000)
    pipelines = pq.read_table(folder / "pipelines.parquet")
    assert len(children) == pipelines.num_rows
    assert {r.data.tags["conceptlens.kind"] for r in children} == {"part"}
    chosen = [r for r in children if r.data.metrics["chosen"] == 1.0]
    assert len(chosen) == 1 and chosen[0].data.params["extractor"] in RootcauseConfig().extractors
    assert np.isfinite(chosen[0].data.metrics["index"])


@pytest.mark.parametrize("override, message", [
    ("rootcause.extractors=[vlm,sift]", "unknown extractor(s) ['sift']"),
    ("rootcause.pipeline=vlm/umap/spectral", "not in the grid"),
    ("rootcause.clusterings=[kmeans,optics]", "unknown clustering(s) ['optics']"),
    ("rootcause.splits=[nosuchsplit]", "failures in splits ['nosuchsplit']"),
])
def test_bad_settings_are_refused_naming_the_key(outputs, demo_run, demo_config, override, message, capsys):
    argv = ["--config", demo_config, f"run.root={demo_run}", "rootcause.extractors=[vlm]",
            "rootcause.reductions=[pca]", override]
    assert rootcause.main(argv) == 2
    assert message in capsys.readouterr().err


def test_successful_attacks_are_clustered_as_a_set_of_their_own(outputs, demo_run, demo_config, tmp_path):
    """``rootcause.adversarial=true``: the attacks that flipped a correct prediction, clustered apart from the
    held-out failures (one pipeline, its UMAP fitted on 200 rows and applied to the rest; the demo's folders
    linked into a run of its own)."""
    run = tmp_path / "demo"
    run.mkdir()
    for step in ("world", "embed", "analyze", "attack"):
        (run / step).symlink_to(demo_run / "demo" / step)
    argv = ["--config", demo_config, f"run.root={tmp_path}", "rootcause.adversarial=true", "rootcause.fit_rows=200",
            "rootcause.splits=[test]",
            "rootcause.extractors=[vlm]", "rootcause.reductions=[umap]", "rootcause.clusterings=[kmeans]"]
    assert rootcause.main(argv) == 0
    clusters = pq.read_table(run / "rootcause" / "clusters.parquet").to_pandas()
    assert set(clusters["set"]) == {"heldout", "adversarial"}
    adversarial = pq.read_table(demo_run / "demo" / "attack" / "embeddings",
                                columns=["id", "split", "label_index", "clean_prediction", "prediction"]).to_pandas()
    adversarial = adversarial[adversarial["split"] == "test"]
    flipped = adversarial[(adversarial["clean_prediction"] == adversarial["label_index"])
                          & (adversarial["prediction"] != adversarial["label_index"])]  # as the stored image is seen
    assert set(clusters.loc[clusters["set"] == "adversarial", "id"]) == set(flipped["id"])
    summary = json.loads((run / "rootcause" / "summary.json").read_text())
    assert summary["sets"]["adversarial"]["chosen"]["clusters"] >= 2
    assert summary["sets"]["adversarial"]["failures"] > 200 and summary["sets"]["heldout"]["failures"] > 200
