"""`conceptlens embed` on a slice of the demo's ConceptWorld: local Ray, a killed run, 2 nodes, a real MLflow server."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import ray

from conceptlens.cli import parse_config
from conceptlens.jobs import embed
from conceptlens.pipeline.runs import model_spec
from conceptlens.world import CLASSES

pytestmark = pytest.mark.slow
ROWS = 300


@pytest.fixture(scope="module")
def dataset(demo_run, tmp_path_factory):
    """A manifest of ROWS test images of the world, plus one truncated and one missing image, with a column of
    the user's own (``photographer``) that passes through."""
    folder = tmp_path_factory.mktemp("data")
    manifest = pq.read_table(demo_run / "demo" / "world" / "manifest.parquet")
    rows = manifest.filter(pc.equal(manifest["split"], "test")).slice(0, ROWS)
    rows = rows.append_column("photographer", pa.array([f"p{i % 3}" for i in range(rows.num_rows)]))
    good = rows.column("path").to_pylist()[0]
    truncated = folder / "truncated.png"
    truncated.write_bytes(open(good, "rb").read()[:100])
    bad = rows.slice(0, 2).to_pylist()
    bad[0] |= {"id": "bad-truncated", "path": str(truncated)}
    bad[1] |= {"id": "bad-missing", "path": str(folder / "missing.png")}
    table = pa.concat_tables([rows, pa.Table.from_pylist(bad, schema=rows.schema)])
    pq.write_table(table, folder / "manifest.parquet")
    return folder / "manifest.parquet"


def args(demo_run, dataset, name, *extra):
    """Embed `dataset` into run `name` with the demo's trained models (given explicitly, as a user would)."""
    trained = json.loads((demo_run / "demo" / "world" / "models.json").read_text())
    return [f"run.root={demo_run}", f"run.name={name}", f"data.source={dataset}", f"data.classes=[{','.join(CLASSES)}]",
            f"classifier.checkpoint={trained['classifier']}", f"vlm.pretrained={trained['vlm']}",
            "embed.batch_size=64", "embed.shard_size=100", "run.device=cpu", *extra]


def test_embeds_every_row_once_and_rejects_unreadable_images(demo_run, dataset, local_ray, capsys):
    assert embed.main(args(demo_run, dataset, "e1")) == 0
    out = demo_run / "e1" / "embed"
    table = pq.read_table(out / "embeddings")
    assert table.num_rows == ROWS and len(set(table.column("id").to_pylist())) == ROWS
    for column in ["id", "path", "split", "label", "label_index", "prediction", "confidence", "logits", "features",
                   "vlm_embedding", "photographer", "node_id"]:
        assert column in table.column_names, column
    truth = set(pq.read_schema(demo_run / "demo" / "world" / "truth.parquet").names) - {"id"}
    assert {"scenario", "caption", "background_water"} <= truth and not truth & set(table.column_names)
    assert len(table.column("logits")[0]) == 10 and len(table.column("features")[0]) == 512
    emb = np.stack(table.column("vlm_embedding").to_numpy(zero_copy_only=False))
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-4)
    accuracy = np.mean(table.column("prediction").to_numpy() == table.column("label_index").to_numpy())
    assert accuracy > 0.7  # the demo classifier, on its own test images
    rejects = pq.read_table(out / "rejects").to_pylist()
    assert {r["id"] for r in rejects} == {"bad-truncated", "bad-missing"}
    assert all(r["error"] for r in rejects)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["rows"] == ROWS and metrics["rejects"] == 2 and metrics["rows_per_second"] > 0
    assert "rows/s" in capsys.readouterr().out


def test_matches_a_plain_loop(demo_run, dataset):
    from conceptlens.models.embedding import Embedder, decode_batch
    table = pq.read_table(demo_run / "e1" / "embed" / "embeddings").slice(0, 8)
    cfg = parse_config("embed", "", args(demo_run, dataset, "e1"))
    paths = np.array(table.column("path").to_pylist())
    plain = Embedder(model_spec(cfg), "cpu")(decode_batch({"path": paths}, cfg.data.image_size))
    assert np.allclose(np.stack(table.column("logits").to_numpy(zero_copy_only=False)), plain["logits"], atol=1e-4)


def test_another_classifier_under_the_same_run_name_is_refused(demo_run, dataset, local_ray, tmp_path, capsys):
    import shutil

    import torch

    job = args(demo_run, dataset, "e1")
    assert embed.main(job) == 0  # done by the first test already, else computed now
    out = demo_run / "e1" / "embed" / "embeddings"
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes() if p.suffix == ".json" else None) for p in out.iterdir()}
    checkpoint = json.loads((demo_run / "demo" / "world" / "models.json").read_text())["classifier"]
    shutil.copy(checkpoint, tmp_path / "same.pt")  # the same weights elsewhere are the same classifier
    assert embed.main([*job, f"classifier.checkpoint={tmp_path / 'same.pt'}"]) == 0
    assert json.loads((out.parent / "metrics.json").read_text())["shards_this_run"] == 0
    state = torch.load(checkpoint, weights_only=True)
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = state[name].clone(memory_format=torch.contiguous_format)  # a view of it may be taken
    state[name].view(-1)[0] += 0.01
    torch.save(state, tmp_path / "changed.pt")
    changed = [*job, f"classifier.checkpoint={tmp_path / 'changed.pt'}"]
    old, new = (model_spec(parse_config("embed", "", a)).fingerprint()["classifier"] for a in (job, changed))
    assert old != new
    capsys.readouterr()
    assert embed.main(changed) == 2
    err = capsys.readouterr().err
    assert f"the classifier changed ({old} → {new})" in err and "use another run.name, or delete" in err
    assert "the VLM" not in err and "input rows" not in err  # only what differs is named
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes() if p.suffix == ".json" else None) for p in out.iterdir()}
    assert after == before  # nothing mixed, nothing lost


@pytest.fixture(scope="module")
def large_dataset(demo_run, tmp_path_factory):
    """1200 test images, 12 shards of 100: long enough to kill a run part-way."""
    manifest = pq.read_table(demo_run / "demo" / "world" / "manifest.parquet")
    path = tmp_path_factory.mktemp("large") / "manifest.parquet"
    pq.write_table(manifest.filter(pc.equal(manifest["split"], "test")).slice(0, 1200), path)
    return path


def test_a_killed_run_resumes_without_losing_or_repeating_rows(demo_run, large_dataset, local_ray):
    out = demo_run / "e2" / "embed" / "embeddings"
    rows = pq.read_metadata(large_dataset).num_rows
    shards = -(-rows // 100)
    job = args(demo_run, large_dataset, "e2", "embed.shard_size=100", "embed.batch_size=20", "embed.actors=1")
    proc = subprocess.Popen([sys.executable, "-m", "conceptlens.cli", "embed", *job], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and len(list(out.glob("part-*.parquet"))) < 2:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
    assert 2 <= len(before) < shards, "the job should have been killed part-way"
    assert embed.main(job) == 0
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
    assert len(after) == shards and all(after[name] == mtime for name, mtime in before.items())
    ids = pq.read_table(out).column("id").to_pylist()
    assert len(ids) == len(set(ids)) == rows
    metrics = json.loads((out.parent / "metrics.json").read_text())
    assert metrics["shards_this_run"] == shards - len(before)


def test_a_killed_model_actor_is_restarted_and_its_batches_retried(demo_run, large_dataset, local_ray):
    import threading

    import psutil

    out = demo_run / "e4" / "embed" / "embeddings"
    killed = []

    def kill_an_actor_once_work_started():
        deadline = time.time() + 240
        while time.time() < deadline and not killed:
            if any(out.glob("part-*.parquet")):
                for proc in psutil.process_iter(["cmdline"]):
                    if "MapWorker" in " ".join(proc.info["cmdline"] or []):
                        proc.kill()
                        killed.append(proc.pid)
                        break
            time.sleep(0.05)

    killer = threading.Thread(target=kill_an_actor_once_work_started)
    killer.start()
    job = args(demo_run, large_dataset, "e4", "embed.shard_size=100", "embed.batch_size=20", "embed.actors=1")
    assert embed.main(job) == 0
    killer.join()
    assert killed, "no model actor was running to kill"
    ids = pq.read_table(out).column("id").to_pylist()
    assert len(ids) == len(set(ids)) == pq.read_metadata(large_dataset).num_rows


def test_runs_on_two_nodes_and_logs_to_a_real_mlflow_server(demo_run, dataset, tmp_path, mlflow_cli):
    from ray.cluster_utils import Cluster

    ray.shutdown()
    uri = mlflow_cli("server", "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                     "--default-artifact-root", str(tmp_path / "artifacts"))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    cluster.add_node(num_cpus=2)
    try:
        assert embed.main(args(demo_run, dataset, "e3", f"ray.address={cluster.address}", "embed.actors=2",
                               "embed.actor_num_cpus=1.5", "embed.decode_num_cpus=0.25",
                               f"mlflow.tracking_uri={uri}")) == 0
        table = pq.read_table(demo_run / "e3" / "embed" / "embeddings")
        assert table.num_rows == ROWS
        assert len(set(table.column("node_id").to_pylist())) >= 2
        import mlflow
        client = mlflow.MlflowClient(tracking_uri=uri)
        runs = client.search_runs([client.get_experiment_by_name("conceptlens").experiment_id])
        assert any(r.data.tags.get("command") == "embed" and r.data.metrics.get("rows") == ROWS for r in runs)
    finally:
        ray.shutdown()
        cluster.shutdown()
