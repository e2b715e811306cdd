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


def test_run_folder_holds_a_usable_manifest(run_root):
    out = run_root / "demo" / "world"
    manifest = pq.read_table(out / "manifest.parquet")
    assert set(manifest.column("split").to_pylist()) == {"train", "vlm", "calib", "test"}
    assert all(p.startswith("/") for p in manifest.column("path").to_pylist()[:10])
    models = json.loads((out / "models.json").read_text())
    assert models["classifier"].endswith(".pt") and models["vlm"].endswith(".pt")


def test_demo_reuses_the_cache_and_summarises(demo_done):
    code, out = demo_done
    assert code == 0
    assert out.count("reusing") == 3  # world, classifier, tiny CLIP
    assert "ConceptLens demo" in out and "star_on_water" in out and "zero-shot" in out
    assert "top responsible concepts" in out and "embeddings table: 6000 rows" in out


def test_the_run_is_tracked_in_mlflow(run_root):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{run_root / 'demo' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("conceptlens").experiment_id])
    world_runs = [r for r in runs if r.data.tags.get("command") == "world"]
    assert world_runs
    data = world_runs[0].data
    assert data.params["world.scenarios.0.name"] == "star_on_water"
    assert 0 < data.metrics["classifier.slices.star_on_water.accuracy"] < 1
    artifacts = {a.path for a in client.list_artifacts(world_runs[0].info.run_id, "world")}
    assert {"world/metrics.json", "world/manifest.parquet"} <= artifacts
