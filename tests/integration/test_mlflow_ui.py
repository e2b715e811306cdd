"""The `mlflow ui` command `conceptlens demo` prints opens the shared store: a real MLflow server over HTTP shows
the demo's pipeline run, its commands' artifacts and the registered filter."""
import json

import pytest
import requests

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ui(demo_done, mlflow_cli):
    """The printed command, run as printed (plus a free loopback port and one worker); its base URL."""
    code, out = demo_done
    assert code == 0, out[-3000:]
    line = next(line for line in out.splitlines() if "mlflow ui --backend-store-uri" in line)
    return mlflow_cli(*line[line.index("mlflow ui"):].split()[1:])


def test_the_ui_shows_the_pipeline_its_artifacts_and_the_registered_filter(ui, demo_run):
    api = f"{ui}/api/2.0/mlflow"
    experiment = requests.get(f"{api}/experiments/get-by-name", params={"experiment_name": "conceptlens"},
                              timeout=30).json()["experiment"]
    runs = requests.post(f"{api}/runs/search", json={"experiment_ids": [experiment["experiment_id"]],
                                                     "filter": "tags.`conceptlens.run` = 'demo'"},
                         timeout=30).json()["runs"]
    tags = [{t["key"]: t["value"] for t in r["data"]["tags"]} for r in runs]
    parent = next(r["info"]["run_id"] for r, t in zip(runs, tags) if t["conceptlens.kind"] == "pipeline")
    monitor = [r["info"]["run_id"] for r, t in zip(runs, tags)
               if t.get("command") == "monitor" and t["mlflow.parentRunId"] == parent]
    assert monitor
    shown = requests.get(f"{ui}/get-artifact", params={"path": "metrics.json", "run_uuid": monitor[0]}, timeout=30)
    assert shown.status_code == 200
    assert shown.json() == json.loads((demo_run / "demo" / "monitor" / "metrics.json").read_text())
    model = requests.get(f"{api}/registered-models/get", params={"name": "conceptlens-demo-filter"}, timeout=30).json()
    assert [a["alias"] for a in model["registered_model"]["aliases"]] == ["champion"]
