"""MLflow tracking and the registry on real sqlite stores in a temporary folder: one store per run root, a
pipeline run per run name with a child per command, tags that line runs up, and a registered model read
back after its store was copied elsewhere."""
import json
import shutil

import mlflow
import pytest

from conceptlens.config import load_config
from conceptlens.pipeline.registry import artifact_location, download, model_name, register_folder
from conceptlens.pipeline.tracking import (flatten, log_results, mlflow_run, numeric_metrics, old_store_hint,
                                           tracking_uri)
from conceptlens.runtime.registered import FilterPyfunc, fetch_bundle


def test_flatten_and_numeric_metrics():
    tree = {"a": {"b": 1, "c": [{"d": 2.5}]}, "e": "text", "f": float("nan"), "g": True}
    assert flatten(tree) == {"a.b": 1, "a.c.0.d": 2.5, "e": "text", "f": tree["f"], "g": True}
    assert numeric_metrics(tree) == {"a.b": 1.0, "a.c.0.d": 2.5}


def world_run(root, name, classifier_bytes: bytes):
    """A run folder as `conceptlens world` leaves it: models.json naming the world and two model files."""
    folder = root / name / "world"
    folder.mkdir(parents=True)
    (folder / "classifier.pt").write_bytes(classifier_bytes)
    (folder / "vlm.pt").write_bytes(b"the same tiny CLIP")
    (folder / "models.json").write_text(json.dumps({"world": str(root / "cache" / "worlds" / "0123456789ab"),
                                                    "classifier": str(folder / "classifier.pt"),
                                                    "vlm": str(folder / "vlm.pt")}))
    return load_config([], [f"run.root={root}", f"run.name={name}"])


def test_commands_nest_under_one_pipeline_run_per_name_in_one_store(tmp_path):
    a, b = world_run(tmp_path, "a", b"classifier A"), world_run(tmp_path, "b", b"classifier B")
    (tmp_path / "note.txt").write_text("an artifact")
    for cfg, command, value in [(a, "world", 0.5), (a, "embed", 10.0), (a, "world", 0.6), (b, "world", 0.7)]:
        with mlflow_run(cfg, command):
            log_results({"accuracy" if command == "world" else "rows": value}, tmp_path / "note.txt")
    with pytest.raises(RuntimeError), mlflow_run(b, "analyze"):
        raise RuntimeError("the command failed")

    assert tracking_uri(a) == tracking_uri(b) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert not (tmp_path / "a" / "mlflow.db").exists()
    client = mlflow.MlflowClient(tracking_uri(a))
    experiment = client.get_experiment_by_name("conceptlens")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    parents = {r.data.tags["conceptlens.run"]: r for r in runs if r.data.tags["conceptlens.kind"] == "pipeline"}
    children = [r for r in runs if r.data.tags["conceptlens.kind"] == "command"]
    assert set(parents) == {"a", "b"} and len(children) == 5
    of_a = [r for r in children if r.data.tags["mlflow.parentRunId"] == parents["a"].info.run_id]
    assert [r.info.run_name for r in of_a] == ["a/world", "a/embed", "a/world"]  # a re-run adds a child
    assert [r.data.metrics for r in of_a] == [{"accuracy": 0.5}, {"rows": 10.0}, {"accuracy": 0.6}]
    assert parents["a"].data.metrics == {"world.accuracy": 0.6, "embed.rows": 10.0}
    assert parents["a"].info.status == "FINISHED" and parents["b"].info.status == "FAILED"
    assert children[-1].info.status == "FAILED" and children[-1].data.tags["command"] == "analyze"

    keys = ["conceptlens.world_hash", "conceptlens.classifier_hash", "conceptlens.vlm_hash",
            "conceptlens.scenarios", "conceptlens.scenarios_hash"]
    for run in runs:  # parents and children alike
        assert set(keys) <= set(run.data.tags), run.info.run_name
    tag = {name: parents[name].data.tags for name in parents}
    assert tag["a"]["conceptlens.world_hash"] == "0123456789ab"
    assert tag["a"]["conceptlens.scenarios"] == "star_on_water,hexagon_in_fog,dark_circle"
    assert tag["a"]["conceptlens.vlm_hash"] == tag["b"]["conceptlens.vlm_hash"]  # same bytes wherever they lie
    assert tag["a"]["conceptlens.classifier_hash"] != tag["b"]["conceptlens.classifier_hash"]
    stored = client.download_artifacts(of_a[0].info.run_id, "note.txt", str(tmp_path / "dl"))
    assert open(stored).read() == "an artifact"
    assert experiment.artifact_location == (tmp_path / "mlartifacts").as_uri()


def test_an_old_run_folder_with_its_own_store_is_named_in_one_line(tmp_path, capsys):
    cfg = world_run(tmp_path, "old", b"classifier")
    (tmp_path / "old" / "mlflow.db").write_bytes(b"")
    hint = old_store_hint(cfg)
    assert "\n" not in hint
    assert f"mlflow ui --backend-store-uri sqlite:///{tmp_path / 'old' / 'mlflow.db'}" in hint
    assert f"mlflow.tracking_uri=sqlite:///{tmp_path / 'old' / 'mlflow.db'}" in hint
    with mlflow_run(cfg, "embed"):
        pass
    assert capsys.readouterr().out.count("older layout") == 1
    cfg.mlflow.tracking_uri = f"sqlite:///{tmp_path / 'old' / 'mlflow.db'}"
    assert old_store_hint(cfg) is None  # the user chose that store


def test_a_registered_model_is_read_from_a_copied_store(tmp_path):
    """Register on one folder, copy only mlflow.db + mlartifacts, delete the original: the model's files are
    found beside the copy."""
    first, copy = tmp_path / "first", tmp_path / "copy"
    cfg = load_config([], [f"run.root={first}", "run.name=r", "data.source=elsewhere"])
    bundle = first / "r" / "bundle"
    (bundle / "models").mkdir(parents=True)
    (bundle / "filter.json").write_text("{}")
    (bundle / "models" / "weights.pt").write_bytes(b"weights")
    with mlflow_run(cfg, "monitor"):
        assert register_folder(bundle, FilterPyfunc(), "m", "champion", tags={"k": "v"}) == "models:/m@champion"
    original = tracking_uri(cfg)
    assert download("models:/m@champion", original).is_relative_to(first / "mlartifacts")
    copy.mkdir()
    shutil.copy(first / "mlflow.db", copy)
    shutil.copytree(first / "mlartifacts", copy / "mlartifacts")
    shutil.rmtree(first)

    moved = f"sqlite:///{copy / 'mlflow.db'}"
    assert artifact_location("models:/m@champion", moved).startswith((first / "mlartifacts").as_uri())
    for uri in ("models:/m@champion", "models:/m/1"):
        folder = fetch_bundle(uri, moved)
        assert folder.is_relative_to(copy / "mlartifacts")
        assert (folder / "models" / "weights.pt").read_bytes() == b"weights"
    assert mlflow.MlflowClient(moved).get_model_version("m", "1").tags == {"k": "v"}
    shutil.rmtree(copy / "mlartifacts")
    with pytest.raises(FileNotFoundError, match="mlartifacts"):
        download("models:/m@champion", moved)
    with pytest.raises(FileNotFoundError, match="no MLflow store"):
        download("models:/m@champion", f"sqlite:///{tmp_path / 'nothing.db'}")
    assert not (tmp_path / "nothing.db").exists()


def test_serve_names_an_unreadable_registry_bundle_in_one_line_before_starting(tmp_path, capsys):
    from conceptlens.jobs import serve

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config([], [f"run.root={tmp_path}", "run.name=r", "data.source=elsewhere"])
    (tmp_path / "bundle").mkdir()
    with mlflow_run(cfg, "monitor"):
        register_folder(tmp_path / "bundle", FilterPyfunc(), "m", "champion")
    capsys.readouterr()
    for bundle, store_uri, why in [("models:/m@nope", store, "nope"),
                                   ("models:/m@champion", f"sqlite:///{tmp_path / 'none.db'}", "no MLflow store")]:
        assert serve.main([f"serve.bundle={bundle}", f"mlflow.tracking_uri={store_uri}"]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and why in err and store_uri in err, err
    assert not (tmp_path / "none.db").exists()


def test_registered_names_carry_the_run_and_a_bad_template_is_named():
    assert model_name("conceptlens-{run}-filter", "demo") == "conceptlens-demo-filter"
    assert model_name("our-filter", "garments") == "our-filter"  # a name of the user's own
    with pytest.raises(ValueError, match=r"only \{run\} may be filled in"):
        model_name("conceptlens-{model}-filter", "demo")
    with pytest.raises(ValueError, match="use letters, digits"):
        model_name("conceptlens-{run}-filter", "my run/1")

