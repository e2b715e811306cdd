"""`conceptlens neurons` end to end on the demo (run by `conceptlens demo`): every voted neuron is named in
concepts on held-out rows, each class with votes gets its CLIP-Illusion grid, the repair changes only the head
and is registered as a new version of the classifier with its lineage, and `embed` / `analyze` / `monitor` run
on that registered version; bad settings are refused with the key named. The naming and repair goals on the
demo and the second scenario set are asserted with the other fidelity goals (test_fidelity.py)."""
import json

import mlflow
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from conceptlens.config import NeuronsConfig
from conceptlens.jobs import analyze, embed, monitor, neurons
from conceptlens.models.classifier import load_state
from conceptlens.pipeline.shards import read_rows
from conceptlens.world import CLASSES

pytestmark = pytest.mark.slow
MODEL = "models:/conceptlens-demo-classifier@repaired"


@pytest.fixture(scope="module")
def outputs(demo_done, demo_run):
    assert demo_done[0] == 0, demo_done[1][-3000:]
    folder = demo_run / "demo" / "neurons"
    return folder, json.loads((folder / "metrics.json").read_text()), demo_done[1]


def test_voted_neurons_are_named_on_held_out_rows_and_drawn(outputs):
    folder, metrics, printed = outputs
    table = pq.read_table(folder / "neurons.parquet").to_pandas()
    cfg = NeuronsConfig()
    assert metrics["flipped"] > 0.9 and metrics["rows"]["held"] > 0 and metrics["rows"]["val"] > 0
    assert (table["share"] > cfg.counterfactual.min_share).all() and set(table["direction"]) == {"insufficient",
                                                                                              "excessive"}
    for row in table.itertuples():
        assert len(row.concepts) <= cfg.top_concepts and all(q <= cfg.alpha for q in row.q)
        assert list(row.r) == sorted(row.r, reverse=True) and all(lo < r < hi for lo, r, hi in zip(row.low, row.r, row.high))
    star = table[(table["class"] == "star") & (table["direction"] == "insufficient")]
    assert star.iloc[0]["description"].startswith(f"n{star.iloc[0]['neuron']}: background=water")
    drawn = {p.stem for p in (folder / "figures").glob("class_*.png")}
    assert drawn == {f"class_{c}" for c in table.loc[table["direction"] == "insufficient", "class"]}
    vis = metrics["visualisation"]
    assert vis["illusion"] > 0 and vis["baseline"] > 0  # both raise their neuron over the starting image
    assert "star" in printed and "background=water" in printed and MODEL in printed


def test_the_repair_changes_only_the_head_and_is_a_new_registered_version(outputs, demo_run):
    folder, metrics, _ = outputs
    base = load_state(json.loads((demo_run / "demo" / "world" / "models.json").read_text())["classifier"])
    repaired = torch.load(folder / "classifier" / "classifier.pt", weights_only=True)
    assert repaired.keys() == base.keys()
    assert all(torch.equal(repaired[k], v) for k, v in base.items() if k.startswith("encoder."))
    assert not torch.equal(repaired["head.weight"], base["head.weight"])
    client = mlflow.MlflowClient(f"sqlite:///{demo_run / 'mlflow.db'}")
    version = client.get_model_version_by_alias("conceptlens-demo-classifier", "repaired")
    tags = version.tags
    base_version = client.get_model_version("conceptlens-demo-classifier", tags["lineage.base_model"].rsplit("/", 1)[1])
    assert int(version.version) > int(base_version.version)
    assert base_version.tags["sha256"] == tags["lineage.base_sha256"] != tags["sha256"]
    assert json.loads(tags["lineage.neurons"]) == metrics["repair"]["neurons"]
    assert float(tags["lineage.lambda"]) == NeuronsConfig().repair.lam and tags["lineage.loss"] == "retain"
    acc = pq.read_table(folder / "repair.parquet").to_pandas()
    overall = acc[acc["class"] == "all"].set_index("method")["accuracy"]
    assert set(overall.index) == {"base", "retain", "ce", "weighted_ce", "focal"}


def test_embed_analyze_and_monitor_run_on_the_registered_version(outputs, demo_run, demo_config, tmp_path):
    folder, _, _ = outputs
    manifest = pq.read_table(demo_run / "demo" / "world" / "manifest.parquet")
    rows = [manifest.filter(pc.equal(manifest["split"], s)).slice(0, n) for s, n in (("calib", 400), ("test", 200))]
    source = tmp_path / "subset.parquet"
    pq.write_table(pa.concat_tables(rows), source)
    vlm = json.loads((demo_run / "demo" / "world" / "models.json").read_text())["vlm"]
    argv = ["--config", demo_config, f"run.root={demo_run}", "run.name=repaired", f"data.source={source}",
            f"vlm.pretrained={vlm}", f"data.classes=[{','.join(CLASSES)}]", "monitor.model_name=",
            "monitor.adaptive.rows=0"]
    assert embed.main(argv + [f"classifier.checkpoint={MODEL}"]) == 0
    assert analyze.main(argv) == 0 and monitor.main(argv) == 0
    ours = read_rows(demo_run / "repaired" / "embed" / "embeddings", ["calib", "test"], ["id"])
    demo = read_rows(demo_run / "demo" / "embed" / "embeddings", ["calib", "test"], ["id"])
    position = {i: k for k, i in enumerate(demo["id"])}
    same = [position[i] for i in ours["id"]]
    np.testing.assert_allclose(ours["features"], demo["features"][same], atol=1e-4)  # the encoder is the base's
    head = torch.nn.Linear(ours["features"].shape[1], 10)
    state = torch.load(folder / "classifier" / "classifier.pt", weights_only=True)
    head.load_state_dict({"weight": state["head.weight"], "bias": state["head.bias"]})
    with torch.no_grad():
        expected = head(torch.as_tensor(ours["features"])).argmax(1).numpy()
    assert (ours["prediction"] == expected).all()
    mlflow.set_tracking_uri(f"sqlite:///{demo_run / 'mlflow.db'}")
    served = mlflow.pyfunc.load_model(MODEL).predict(pq.read_table(source).to_pandas().head(8))
    assert served["prediction"].tolist() == expected[:8].tolist()  # the version is also a pyfunc model
    assert json.loads((demo_run / "repaired" / "monitor" / "metrics.json").read_text())["test_accuracy"] > 0.8
    # and neurons itself on this run of a user's manifest (no world behind it)
    assert neurons.main(argv + ["neurons.visualise.neurons=0", "neurons.model_name="]) == 0
    assert pq.read_table(demo_run / "repaired" / "neurons" / "neurons.parquet").num_rows > 0


@pytest.mark.parametrize("override, message", [
    (["neurons.eval_split=calib"], "fit_split and neurons.eval_split are both"),
    (["neurons.repair.loss=hinge"], "neurons.repair.loss: unknown loss 'hinge'"),
    (["neurons.repair.classes=[unicorn]"], "unicorn"),
    (["neurons.counterfactual.stepz=3"], "neurons.counterfactual.stepz"),
])
def test_bad_settings_are_refused_with_the_key_named(outputs, demo_run, demo_config, override, message, capsys):
    try:
        code = neurons.main(["--config", demo_config, f"run.root={demo_run}", *override])
    except SystemExit as exit_:  # a config error exits from the parser
        code = exit_.code
    assert code == 2 and message in capsys.readouterr().err
