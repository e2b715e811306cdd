"""`conceptlens world` and `conceptlens demo` on the demo's ConceptWorld (trains the models once, then cached)."""
import json

import pyarrow.parquet as pq
import pytest

from conceptlens.config import load_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_root(demo_run):
    return demo_run


@pytest.fixture(scope="module")
def metrics(run_root):
    return json.loads((run_root / "demo" / "world" / "metrics.json").read_text())


def test_every_planted_failure_shows_in_the_classifier(metrics, demo_config):
    slices = metrics["classifier"]["slices"]
    assert set(slices) == {s.name for s in load_config([demo_config]).world.scenarios}
    for name, s in slices.items():
        assert s["n"] >= 40, name
        assert s["gap"] >= 0.20, (name, s)
    assert metrics["classifier"]["accuracy_rest"] >= 0.85


def test_tiny_clip_is_good_enough_to_be_the_oracle(metrics, demo_config):
    vlm = metrics["vlm"]
    assert vlm["zero_shot_accuracy"] >= 0.80
    for scenario in load_config([demo_config]).world.scenarios:
        attribute = scenario.attribute.replace("=", "_")
        assert vlm["attribute_auroc"][attribute] >= 0.90, attribute
    assert vlm["class_prompt_max_cosine"] < 0.98  # shape words have not collapsed onto each other
    assert all(metrics["checks"].values())


def test_run_folder_holds_a_usable_manifest_and_the_truth_beside_it(run_root):
    out = run_root / "demo" / "world"
    manifest = pq.read_table(out / "manifest.parquet")
    assert manifest.column_names == ["id", "path", "split", "label", "label_index"]  # the data, nothing of the truth
    assert set(manifest.column("split").to_pylist()) == {"train", "vlm", "calib", "test"}
    assert all(p.startswith("/") for p in manifest.column("path").to_pylist()[:10])
    truth = pq.read_table(out / "truth.parquet")
    assert truth.column("id").to_pylist() == manifest.column("id").to_pylist()
    assert {"scenario", "caption", "background", "background_water"} <= set(truth.column_names)
    assert {"star_on_water", None} <= set(truth.column("scenario").to_pylist())
    models = json.loads((out / "models.json").read_text())
    assert models["classifier"].endswith(".pt") and models["vlm"].endswith(".pt")


def test_demo_reuses_the_cache_and_summarises(demo_done):
    code, out = demo_done
    assert code == 0
    for what in ("world", "classifier", "tiny CLIP"):  # (rootcause's autoencoder may be cached too)
        assert out.count(f"{what}: reusing") == 1, what
    assert "ConceptLens demo" in out and "star_on_water" in out and "zero-shot" in out
    assert "concepts that go with failure" in out and "embeddings table: 6000 rows" in out


def test_the_run_is_tracked_in_mlflow(run_root, demo_done, demo_config):
    """One store under the run root; the demo is a pipeline run with a child per command (world twice: the
    `world` fixture, then the demo), all tagged with the world's and the models' hashes."""
    import mlflow

    from conceptlens.pipeline.runs import model_spec

    assert not (run_root / "demo" / "mlflow.db").exists()
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{run_root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("conceptlens")
    runs = client.search_runs([experiment.experiment_id], "tags.`conceptlens.run` = 'demo'",
                              order_by=["attributes.start_time ASC"])
    parent = [r for r in runs if r.data.tags["conceptlens.kind"] == "pipeline"]
    assert len(parent) == 1
    parent = parent[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    commands = [r.data.tags["command"] for r in children]
    assert commands[:8] == ["world", "world", "embed", "analyze", "attack", "rootcause", "explain", "monitor"]
    assert [r.info.run_name for r in children[:2]] == ["demo/world", "demo/world"]

    cfg = load_config([demo_config], [f"run.root={run_root}"])
    models = json.loads((run_root / "demo" / "world" / "models.json").read_text())
    fingerprint = model_spec(cfg).fingerprint()
    for run in [parent, *children]:
        tags = run.data.tags
        assert tags["conceptlens.world_hash"] == models["world"].rsplit("/", 1)[1], run.info.run_name
        assert tags["conceptlens.classifier_hash"] == fingerprint["classifier"], run.info.run_name
        assert tags["conceptlens.vlm_hash"] == fingerprint["vlm"], run.info.run_name
        assert tags["conceptlens.scenarios"] == "star_on_water,hexagon_in_fog,dark_circle", run.info.run_name

    world = children[1]
    assert world.data.params["world.scenarios.0.name"] == "star_on_water"
    accuracy = world.data.metrics["classifier.slices.star_on_water.accuracy"]
    assert 0 < accuracy < 1
    latest = [r for r in children if r.data.tags["command"] == "world"][-1]  # the parent holds the latest values
    assert parent.data.metrics["world.classifier.slices.star_on_water.accuracy"] == \
        latest.data.metrics["classifier.slices.star_on_water.accuracy"]
    assert set(children[0].data.metrics) == set(children[1].data.metrics)  # stable names across re-runs
    artifacts = {a.path for a in client.list_artifacts(world.info.run_id, "world")}
    assert {"world/metrics.json", "world/manifest.parquet"} <= artifacts
    assert experiment.artifact_location == (run_root / "mlartifacts").as_uri()
