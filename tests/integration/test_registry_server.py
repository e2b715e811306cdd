"""Tracking and the registry through a real `mlflow server` that proxies artifacts (as infra/mlflow.yaml runs it):
pipeline and command runs over REST, a registered bundle downloaded again from the server."""

import mlflow
import pytest

from conceptlens.config import load_config
from conceptlens.pipeline.registry import register_folder
from conceptlens.pipeline.tracking import log_results, mlflow_run
from conceptlens.runtime.registered import FilterPyfunc, fetch_bundle

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory, mlflow_cli):
    folder = tmp_path_factory.mktemp("mlflow-server")
    return mlflow_cli("server", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
                      "--artifacts-destination", str(folder / "artifacts"), "--serve-artifacts")


def test_runs_nest_and_a_registered_bundle_comes_back_from_the_server(server, tmp_path):
    run_root = tmp_path / "runs"
    cfg = load_config([], [f"run.root={run_root}", "run.name=remote", "data.source=elsewhere",
                           f"mlflow.tracking_uri={server}"])
    bundle = tmp_path / "bundle"
    (bundle / "models").mkdir(parents=True)
    (bundle / "filter.json").write_text('{"made": "here"}')
    (bundle / "models" / "weights.pt").write_bytes(b"weights")
    with mlflow_run(cfg, "embed"):
        log_results({"rows": 3})
    with mlflow_run(cfg, "monitor"):
        register_folder(bundle, FilterPyfunc(), "remote-filter", "champion")
    assert not (run_root / "mlflow.db").exists()  # nothing local: the server holds it all

    client = mlflow.MlflowClient(server)
    runs = client.search_runs([client.get_experiment_by_name("conceptlens").experiment_id],
                              "tags.`conceptlens.run` = 'remote'")
    parent = next(r for r in runs if r.data.tags["conceptlens.kind"] == "pipeline")
    children = {r.data.tags["command"] for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert children == {"embed", "monitor"} and parent.data.metrics == {"embed.rows": 3.0}

    folder = fetch_bundle("models:/remote-filter@champion", server)
    assert not folder.is_relative_to(tmp_path)  # downloaded, not the folder it was made from
    assert (folder / "filter.json").read_text() == '{"made": "here"}'
    assert (folder / "models" / "weights.pt").read_bytes() == b"weights"
