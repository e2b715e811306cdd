"""A user's own data, as a user brings it: an image folder without splits (class sub-folders, one corrupt
file), their own classifier and CLIP checkpoints and open_clip config, all named once in one `--config`
file. `embed`, `analyze`, `monitor` (before any attack), the endpoint on that bundle, `attack` and
`monitor` again, and `explain` (its failures clustered by k-means) all run from that file alone. The images and weights are the demo's ConceptWorld
ones, copied out of the cache, so the models mean something."""
from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
import socket
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import requests
import yaml

from conceptlens.jobs import analyze, attack, embed, evaluate, explain, monitor
from conceptlens.world import CLASSES

pytestmark = pytest.mark.slow
PER_CLASS, FROM_SLICES = 32, 60  # images per class, plus images of the planted failure slices (mistakes to learn from)


@pytest.fixture(scope="module")
def user(demo_run, tmp_path_factory) -> dict:
    """The folder, the copied checkpoints and the user's config file (nothing else is ever passed)."""
    home = tmp_path_factory.mktemp("user")
    world = pq.read_table(demo_run / "demo" / "world" / "manifest.parquet", columns=["id", "path", "split", "label"])
    truth = pq.read_table(demo_run / "demo" / "world" / "truth.parquet", columns=["id", "scenario"])
    scenario = dict(zip(truth["id"].to_pylist(), truth["scenario"].to_pylist()))
    test = [r | {"scenario": scenario[r["id"]]} for r in world.filter(pc.equal(world["split"], "test")).to_pylist()]
    picked = [r for c in CLASSES for r in [r for r in test if r["label"] == c][:PER_CLASS]]
    taken = {r["id"] for r in picked}
    picked += [r for r in test if r["scenario"] and r["id"] not in taken][:FROM_SLICES]
    for row in picked:
        (home / "garments" / row["label"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(row["path"], home / "garments" / row["label"] / f"{row['id']}.png")
    (home / "garments" / "circle" / "corrupt.png").write_bytes(Path(picked[0]["path"]).read_bytes()[:120])
    trained = json.loads((demo_run / "demo" / "world" / "models.json").read_text())
    (home / "models").mkdir()
    shutil.copy(trained["classifier"], home / "models" / "my_resnet18.pt")
    shutil.copy(trained["vlm"], home / "models" / "my_clip.pt")
    from conceptlens.models.vlm import CONFIG_DIR
    shutil.copy(CONFIG_DIR / "conceptworld-tiny.json", home / "models" / "my-clip.json")  # the stem names it
    config = {
        "run": {"root": str(home / "runs"), "name": "garments", "device": "cpu"},
        "data": {"source": str(home / "garments"), "image_size": 48, "classes": list(CLASSES)},
        "classifier": {"arch": "resnet18", "checkpoint": str(home / "models" / "my_resnet18.pt"), "num_classes": 10},
        "vlm": {"arch": "my-clip", "pretrained": str(home / "models" / "my_clip.pt"),
                "model_config": str(home / "models" / "my-clip.json")},
        "embed": {"batch_size": 64, "shard_size": 200},
        "attack": {"attacks": ["fgsm"], "epsilons": [8], "rows_per_split": 30},
        "monitor": {"adaptive": {"rows": 0}},
        "ray": {"num_cpus": 2, "object_store_mb": 256},
    }
    (home / "user.yaml").write_text(yaml.safe_dump(config))
    return {"config": str(home / "user.yaml"), "run": home / "runs" / "garments", "folder": home / "garments",
            "images": len(picked)}


def run(main, config: str, *extra: str) -> tuple[int, str]:
    """A command in-process with the user's config only: its exit code and console output."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(["--config", config, *extra])
    return code, out.getvalue()


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.shutdown()
    yield  # the first command starts it from the user's config (ray.num_cpus, ray.object_store_mb)
    ray.shutdown()


@pytest.fixture(scope="module")
def embedded(user, local_ray) -> tuple[int, str]:
    return run(embed.main, user["config"])


@pytest.fixture(scope="module")
def analyzed(user, embedded) -> tuple[int, str]:
    return run(analyze.main, user["config"])


@pytest.fixture(scope="module")
def before_attack(user, analyzed) -> dict:
    """`monitor` before any `attack`: its exit code, output, evaluation table, metrics and bundle info."""
    code, out = run(monitor.main, user["config"])
    folder = user["run"] / "monitor"
    return {"code": code, "out": out, "table": pq.read_table(folder / "evaluation.parquet").to_pylist(),
            "metrics": json.loads((folder / "metrics.json").read_text()),
            "bundle": json.loads((folder / "bundle" / "filter.json").read_text())}


def test_embed_reads_the_folder_splits_it_by_id_and_records_its_inputs(user, embedded):
    code, out = embedded
    assert code == 0, out[-3000:]
    table = pq.read_table(user["run"] / "embed" / "embeddings", columns=["id", "split", "label", "label_index"])
    assert table.num_rows == user["images"]  # every readable image once; the corrupt one is not among them
    assert set(table["split"].to_pylist()) == {"calib", "test"}
    assert all("/" in i for i in table["id"].to_pylist())  # ids are paths inside the folder
    rejects = pq.read_table(user["run"] / "embed" / "rejects").to_pylist()
    assert [r["id"] for r in rejects] == ["circle/corrupt.png"] and rejects[0]["error"]
    recorded = json.loads((user["run"] / "embed" / "inputs.json").read_text())["inputs"]
    assert recorded["vlm.arch"] == "my-clip" and recorded["data.classes"] == list(CLASSES)
    assert recorded["classifier.checkpoint"].endswith("models/my_resnet18.pt")


def test_analyze_needs_nothing_more_and_measures_the_aligner_on_held_out_rows(user, analyzed):
    code, out = analyzed
    assert code == 0, out[-3000:]
    aligner = json.loads((user["run"] / "analyze" / "metrics.json").read_text())["aligner"]
    assert aligner["r2_held_out_method"] == "held_out" and math.isfinite(aligner["r2_held_out"])
    assert aligner["held_out_rows"] > 0 and aligner["fit_rows"] + aligner["held_out_rows"] == user["images"]
    assert aligner["r2_held_out"] < aligner["r2_fit"]
    scores = pq.read_table(user["run"] / "analyze" / "scores.parquet", columns=["split"])
    assert set(scores["split"].to_pylist()) == {"calib", "test"}


def test_a_key_that_contradicts_what_embed_used_is_refused_by_name(user, analyzed):
    code, out = run(analyze.main, user["config"], "data.image_size=64")
    assert code == 2 and "data.image_size=64" in out and "was embedded with 48" in out


def test_monitor_before_attack_detects_misclassification_only(before_attack):
    assert before_attack["code"] == 0, before_attack["out"][-3000:]
    assert "adversarial detection is off: no `attack` outputs" in before_attack["out"]
    table, metrics = before_attack["table"], before_attack["metrics"]
    assert {r["task"] for r in table} == {"misclassified"}
    assert {r["detector"] for r in table} >= {"concept filter", "msp"}
    assert all(math.isfinite(r["auroc"]) for r in table)
    assert metrics["heads"] == ["misclassified"] and set(metrics["thresholds"]) == {"misclassified"}
    assert set(metrics["verdicts"]) == {"accept", "likely-misclassified"}
    assert not any("_eps" in key for key in metrics["detection"])
    assert before_attack["bundle"]["heads"] == ["misclassified"]


def test_the_endpoint_serves_a_misclassification_only_bundle(user, before_attack):
    """Real HTTP against a local Ray Serve: verdicts and the misclassification score, no adversarial score; without
    a token only because serve.allow_anonymous is set (an open endpoint, which answers a request without one)."""
    from ray import serve

    from conceptlens.config import ServeConfig, load_config
    from conceptlens.serve.app import build_app

    assert before_attack["code"] == 0
    cfg = load_config([user["config"]])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg.serve = ServeConfig(port=port, min_replicas=1, max_replicas=1, num_cpus=0.5,
                            token_env="CONCEPTLENS_UNSET_TOKEN", allow_anonymous=True)  # open, on loopback
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(build_app(cfg), name="user", route_prefix="/")
        image = next((user["folder"] / "star").glob("*.png"))
        answer = requests.post(f"http://127.0.0.1:{port}/predict", files=[("files", (image.name, image.read_bytes()))],
                               timeout=60)
    finally:
        serve.shutdown()
    assert answer.status_code == 200, answer.text
    prediction = answer.json()["predictions"][0]
    assert prediction["verdict"] in ("accept", "likely-misclassified")
    assert set(prediction["scores"]) == {"misclassified"} and 0 <= prediction["scores"]["misclassified"] <= 1


def test_attack_then_monitor_add_adversarial_detection(user, before_attack):
    code, out = run(attack.main, user["config"])
    assert code == 0, out[-3000:]
    adversarial = pq.read_table(user["run"] / "attack" / "adversarial.parquet", columns=["split", "source_id"])
    assert set(adversarial["split"].to_pylist()) == {"calib", "test"} and adversarial.num_rows == 60
    code, out = run(monitor.main, user["config"], "monitor.adaptive.rows=6", "monitor.adaptive.epsilons=[8]",
                    "monitor.adaptive.steps=5")  # the white-box attack on the user's data too, in small
    assert code == 0, out[-3000:]
    assert "adversarial detection is off" not in out
    table = pq.read_table(user["run"] / "monitor" / "evaluation.parquet").to_pylist()
    assert {r["task"] for r in table} == {"misclassified", "fgsm_eps8"}
    metrics = json.loads((user["run"] / "monitor" / "metrics.json").read_text())
    assert metrics["heads"] == ["misclassified", "adversarial"] and "adversarial_detection" not in metrics
    assert list(metrics["adaptive"]) == ["eps8"] and 0 < metrics["adaptive"]["eps8"]["correct"] <= 6


def test_explain_describes_the_users_failures_without_rootcause(user, embedded):
    """No `rootcause` run and no truth: the failures are clustered by k-means in the VLM space and described with
    the bundled bank; every shown sentence validated."""
    code, out = run(explain.main, user["config"], "explain.clusters=kmeans", "explain.k=3", "explain.easy_clusters=4",
                    "explain.sweep_clusters=[2]", "explain.sweep_k=[1]")
    assert code == 0, out[-2000:]
    table = pq.read_table(user["run"] / "explain" / "sentences.parquet").to_pandas()
    assert len(table) and set(table["cluster"]) <= {0, 1, 2}
    assert table.loc[table["shown"], "validated"].all()
    assert "clusters described (kmeans" in out


def test_evaluate_scores_the_run_against_the_users_own_attribute_table(user, demo_run, embedded, analyzed):
    """The user knows attributes of their images (here: the world's, written out as a user's CSV keyed by their
    folder paths, plus one free-standing column) and the slices they suspect: `evaluate.truth` scores the run against
    them with the scorecard ConceptWorld runs get. Each slice's rows, found from the classes and the table alone,
    are exactly the rows the world planted it in; a column the table lacks is refused by its key."""
    import csv

    groups = {"size": ["small", "large"], "pattern": ["plain", "striped", "dotted"],
              "color": ["red", "green", "blue", "yellow", "purple"], "background": ["grass", "water", "sand", "indoor"],
              "weather": ["clear", "rain", "snow", "fog"], "lighting": ["bright", "dark"],
              "occlusion": ["visible", "occluded"]}
    world = {r["id"]: r for r in pq.read_table(demo_run / "demo" / "world" / "truth.parquet",
                                               columns=["id", "scenario", *groups]).to_pylist()}
    embedded_ids = pq.read_table(user["run"] / "embed" / "embeddings", columns=["id"])["id"].to_pylist()
    table = user["run"].parent.parent / "attributes.csv"
    with open(table, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", *groups, "wet"])
        for image in embedded_ids:
            row = world[Path(image).stem]
            writer.writerow([image, *(row[g] for g in groups), row["weather"] in ("rain", "snow")])
    slices = [{"name": "water_star", "kind": "spurious_correlation", "classes": ["star"],
               "attribute": "background=water"},
              {"name": "fog_hexagon", "kind": "blind_spot", "classes": ["hexagon"], "attribute": "weather=fog"},
              {"name": "dark_circle", "kind": "rare_subgroup", "classes": ["circle"], "attribute": "lighting=dark"}]
    declared = user["run"].parent.parent / "truth.yaml"
    declared.write_text(yaml.safe_dump({"evaluate": {"truth": {"table": str(table), "id": "image", "groups": groups,
                                                               "free": ["wet"], "slices": slices}}}))
    code, out = run(evaluate.main, user["config"], "--config", str(declared))
    assert code == 0, out[-3000:]
    card = json.loads((user["run"] / "evaluate" / "scorecard.json").read_text())
    planted_by_world = {"water_star": "star_on_water", "fog_hexagon": "hexagon_in_fog", "dark_circle": "dark_circle"}
    test_ids = pq.read_table(user["run"] / "embed" / "embeddings", columns=["id", "split"]).to_pylist()
    for name, theirs in planted_by_world.items():
        expected = sum(world[Path(r["id"]).stem]["scenario"] == theirs for r in test_ids if r["split"] == "test")
        assert card["world"]["scenarios"][name]["n"] == expected > 0, name
    assert "semantic" in card and card["semantic"]["truth"]["cells"] == 10 * (sum(map(len, groups.values())) + 1)
    assert "wet" in pq.read_table(user["run"] / "evaluate" / "ground_truth.parquet")["concept"].to_pylist()
    assert {"rootcause", "neurons"} <= set(card["absent"])
    code, out = run(evaluate.main, user["config"], "--config", str(declared), "evaluate.truth.id=filename")
    assert code == 2 and "evaluate.truth.id: no column 'filename'" in out
