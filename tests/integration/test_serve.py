"""`conceptlens serve`'s application over real HTTP on 127.0.0.1, against a local Ray Serve.

One Ray and one Serve for the module. The app from the demo's bundle folder answers like the
Embedder + ConceptFilter run in this process, rejects bad input with 4xx JSON and keeps serving;
then serve/config.yaml is deployed (bundle from the MLflow registry) and its thresholds changed
in place, without a new replica; last, the registered filter is served from a copy of the MLflow
store alone, the original run folder taken away. Batching is checked as plain functions and through the replica's
batch counts (``_local_testing_mode`` cannot run ``@serve.batch``).
"""
from __future__ import annotations

import base64
import io
import os
import shutil
import socket
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import requests
import yaml
from PIL import Image

from conceptlens.serve.app import decode_upload, judge
from conceptlens.config import ServeConfig

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
APP = "conceptlens"


@pytest.fixture(scope="module")
def run_root(demo_run, demo_done) -> Path:
    code, out = demo_done
    assert code == 0, out[-3000:]
    return Path(demo_run)


@pytest.fixture(scope="module")
def images(run_root) -> list[tuple[str, bytes]]:
    """Six test images of the demo world: (file name, PNG bytes)."""
    table = pq.read_table(run_root / "demo" / "world" / "manifest.parquet", columns=["path", "split"])
    paths = [p for p, s in zip(table["path"].to_pylist(), table["split"].to_pylist()) if s == "test"][:6]
    return [(Path(p).name, Path(p).read_bytes()) for p in paths]


@pytest.fixture(scope="module")
def reference(run_root, images, demo_config) -> dict:
    """Label, verdict and scores of the images from the run's own models (not the bundle's copies) and the
    bundle's ConceptFilter, in this process."""
    from conceptlens.config import load_config
    from conceptlens.models.embedding import Embedder
    from conceptlens.pipeline.runs import model_spec
    from conceptlens.runtime.filter import ConceptFilter

    filt = ConceptFilter.load(run_root / "demo" / "monitor" / "bundle")
    cfg = load_config([demo_config], [f"run.root={run_root}"])
    embedder = Embedder(model_spec(cfg), "cpu")
    size = cfg.data.image_size
    batch = np.stack([np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize((size, size), Image.BILINEAR))
                      for _, data in images])
    columns = embedder.embed(batch)
    verdicts = filt.verdicts(columns)
    return {"filter": filt, "columns": columns, "label": [filt.class_names[p] for p in columns["prediction"]],
            "verdict": list(verdicts["verdict"]), "misclassified": verdicts["misclassified"],
            "adversarial": verdicts["adversarial"]}


@pytest.fixture(scope="module")
def url(run_root):
    """A local Ray and Serve on a free loopback port; the bearer token is in the replicas' environment."""
    import ray
    from ray import serve

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    if ray.is_initialized():  # the demo's jobs leave a Ray up; ours must start with the token set
        ray.shutdown()
    previous = os.environ.get("CONCEPTLENS_TOKEN")
    os.environ["CONCEPTLENS_TOKEN"] = TOKEN
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=256 * 2**20,
             log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()
    ray.shutdown()
    if previous is None:
        os.environ.pop("CONCEPTLENS_TOKEN")
    else:
        os.environ["CONCEPTLENS_TOKEN"] = previous


@pytest.fixture(scope="module")
def served(url, run_root, demo_config) -> str:
    """The app of `conceptlens serve` on the bundle folder, one small model replica."""
    from ray import serve

    from conceptlens.config import load_config
    from conceptlens.serve.app import build_app

    cfg = load_config([demo_config], [f"run.root={run_root}", "run.device=cpu"])
    cfg.serve = ServeConfig(min_replicas=1, max_replicas=1, num_cpus=0.5, max_request_bytes=2**20,
                            max_image_pixels=10**6, max_images=8, batch_wait_timeout_s=0.05)
    serve.run(build_app(cfg), name=APP, route_prefix="/")
    return url


def model_info(app: str = APP) -> dict:
    from ray import serve

    return serve.get_deployment_handle("FilterModel", app).info.remote().result(timeout_s=30)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("L", (width, height)).save(out, "PNG")
    return out.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG announcing ``width x height`` pixels with almost no pixel data: decoding it would fail."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def assert_agrees(answers: list[dict], reference: dict, rows: range) -> None:
    assert [a["label"] for a in answers] == [reference["label"][i] for i in rows]
    assert [a["verdict"] for a in answers] == [reference["verdict"][i] for i in rows]
    for a, i in zip(answers, rows):
        assert a["scores"]["misclassified"] == pytest.approx(reference["misclassified"][i], abs=1e-4)
        assert a["scores"]["adversarial"] == pytest.approx(reference["adversarial"][i], abs=1e-4)
        assert 0 < a["confidence"] <= 1
        assert len(a["concepts"]) == 3 and all(a["label"] in c["text"] for c in a["concepts"])


def test_batched_answers_equal_single_answers(reference):
    """The batching logic as plain functions: one call on N stacked inputs = N calls on one input."""
    filt, columns = reference["filter"], reference["columns"]
    together = judge(filt, columns)
    alone = [judge(filt, {k: v[i:i + 1] for k, v in columns.items()})[0] for i in range(len(together))]
    assert [a["verdict"] for a in together] == [a["verdict"] for a in alone] == reference["verdict"]
    for a, b in zip(together, alone):
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-6)
        assert [c["text"] for c in a["concepts"]] == [c["text"] for c in b["concepts"]]


def test_multipart_batch_agrees_with_in_process(served, images, reference):
    files = [("files", (name, data, "image/png")) for name, data in images[:4]]
    r = requests.post(f"{served}/predict", files=files, headers=AUTH, timeout=60)
    assert r.status_code == 200, r.text
    answers = r.json()["predictions"]
    assert [a["name"] for a in answers] == [name for name, _ in images[:4]]
    assert_agrees(answers, reference, range(4))
    assert model_info()["batches"]["largest"] > 1  # the four images of the request shared a model call


def test_base64_json_agrees_with_in_process(served, images, reference):
    body = {"images": [b64(images[4][1]), "data:image/png;base64," + b64(images[5][1])]}
    r = requests.post(f"{served}/predict", json=body, headers=AUTH, timeout=60)
    assert r.status_code == 200, r.text
    answers = r.json()["predictions"]
    assert [a["name"] for a in answers] == ["images[0]", "images[1]"]
    assert_agrees(answers, reference, range(4, 6))
    r = requests.post(f"{served}/classify", json=body, headers=AUTH, timeout=60)
    assert [a["label"] for a in r.json()["predictions"]] == reference["label"][4:6]


def test_health_and_docs(served):
    assert requests.get(f"{served}/healthz", timeout=30).json() == {"status": "ok"}
    schema = requests.get(f"{served}/openapi.json", timeout=10).json()
    assert set(schema["paths"]["/predict"]["post"]["requestBody"]["content"]) == {"multipart/form-data",
                                                                                  "application/json"}
    assert requests.get(f"{served}/docs", timeout=10).status_code == 200


def test_bearer_token(served, images):
    from conceptlens.serve.app import authorize

    files = [("files", images[0])]
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        r = requests.post(f"{served}/predict", files=files, headers=headers, timeout=30)
        assert r.status_code == 401 and "token" in r.json()["error"]
        assert r.headers["www-authenticate"] == "Bearer"
    authorize(None, None)  # no token configured: open (the replica logs a warning)


def test_bad_input_is_a_4xx_and_the_replica_keeps_serving(served, images):
    good, name = images[0][1], images[0][0]
    cases = {
        "oversized body": (413, {"files": [("files", ("big.png", b"\0" * (2**20 + 1)))]}),
        "not an image": (400, {"files": [("files", ("x.png", b"GIF89a? no, plain text"))]}),
        "truncated PNG": (400, {"files": [("files", ("t.png", good[: len(good) // 2]))]}),
        "too many pixels": (413, {"files": [("files", ("huge.png", png(2000, 2000)))]}),
        "bomb header": (413, {"json": {"images": [b64(png_header(40000, 40000))]}}),
        "malformed JSON": (400, {"data": b'{"images": [', "headers": {"Content-Type": "application/json"}}),
        "missing field": (422, {"json": {"pictures": [b64(good)]}}),
        "bad base64": (400, {"json": {"images": ["not*base64"]}}),
        "wrong field": (422, {"files": [("image", (name, good))]}),
        "too many images": (413, {"json": {"images": [b64(good)] * 9}}),
        "wrong content type": (415, {"data": good, "headers": {"Content-Type": "image/png"}}),
    }
    for case, (status, kwargs) in cases.items():
        headers = AUTH | kwargs.pop("headers", {})
        r = requests.post(f"{served}/predict", headers=headers, timeout=30, **kwargs)
        assert r.status_code == status, (case, r.text)
        assert isinstance(r.json()["error"], str), case
    r = requests.post(f"{served}/predict", files=[("files", (name, good))], headers=AUTH, timeout=30)
    assert r.status_code == 200 and r.json()["predictions"][0]["verdict"]


def test_pixels_are_checked_before_decoding():
    """A header claiming 3000x3000 pixels over 64 bytes of data: rejected for its size (413), never decoded (400)."""
    from fastapi import HTTPException

    with pytest.raises(HTTPException) as err:
        decode_upload(png_header(3000, 3000), 48, 10**6)
    assert err.value.status_code == 413


def test_config_files_agree():
    """serve/config.yaml and the RayService's serveConfigV2 are valid Serve configs of the same application."""
    from ray.serve.schema import ServeDeploySchema

    from conceptlens.serve.app import USER_CONFIG_KEYS

    local = yaml.safe_load((REPO / "serve" / "config.yaml").read_text())
    service = yaml.safe_load(yaml.safe_load((REPO / "infra" / "rayservice.yaml").read_text())["spec"]["serveConfigV2"])
    apps = [ServeDeploySchema.model_validate(c).applications[0] for c in (local, service)]
    assert apps[0].import_path == apps[1].import_path == "conceptlens.serve.app:app_builder"
    assert [d.name for d in apps[0].deployments] == [d.name for d in apps[1].deployments] == ["FilterModel", "Ingress"]
    assert set(apps[0].args["serve"]) == set(apps[1].args["serve"])
    for app in apps:
        assert set(app.deployments[0].user_config) == set(USER_CONFIG_KEYS)


def serve_config(url: str, demo_config: str, overrides: list[str]) -> dict:
    """serve/config.yaml as `serve deploy` takes it, on the test's port, one small model replica."""
    config = yaml.safe_load((REPO / "serve" / "config.yaml").read_text())
    config["http_options"] = {"host": "127.0.0.1", "port": int(url.rsplit(":", 1)[1])}
    app = config["applications"][0]
    app["args"]["config"] = [demo_config]
    app["args"]["overrides"] = overrides
    model = next(d for d in app["deployments"] if d["name"] == "FilterModel")
    model["autoscaling_config"] |= {"min_replicas": 1, "max_replicas": 1}
    model["ray_actor_options"]["num_cpus"] = 0.5
    return config


def deploy(config: dict) -> None:
    """What `serve deploy` does (Serve takes config-file apps only once no app is deployed from Python)."""
    from ray import serve
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    apps = _get_global_client().get_serve_details().get("applications", {})
    if APP in apps and not apps[APP].get("deployed_app_config"):  # the app deployed from Python
        serve.delete(APP)
    _get_global_client().deploy_apps(ServeDeploySchema.model_validate(config), _blocking=True)


def test_registry_bundle_and_thresholds_without_restart(served, url, images, run_root, demo_config):
    """serve/config.yaml deployed as `serve deploy` does, the bundle from models:/conceptlens-filter@champion;
    a new user_config changes the verdicts on the same replica."""
    config = serve_config(url, demo_config, [f"run.root={run_root}", "run.device=cpu"])
    model = next(d for d in config["applications"][0]["deployments"] if d["name"] == "FilterModel")

    def verdicts(threshold: float) -> list[str]:
        model["user_config"]["thresholds"] = {"misclassified": threshold, "adversarial": threshold}
        deploy(config)
        deadline = time.time() + 60
        while model_info()["thresholds"]["adversarial"] != threshold:
            assert time.time() < deadline, "user_config not applied"
            time.sleep(0.5)
        body = {"images": [b64(data) for _, data in images]}
        r = requests.post(f"{url}/predict", json=body, headers=AUTH, timeout=60)
        assert r.status_code == 200, r.text
        return [a["verdict"] for a in r.json()["predictions"]]

    assert verdicts(1.0) == ["accept"] * len(images)
    before = model_info()
    assert before["bundle"] == "models:/conceptlens-filter@champion"
    assert all(v != "accept" for v in verdicts(0.0))
    assert model_info()["replica"] == before["replica"]


def test_a_registered_filter_travels_with_a_copy_of_the_store(url, run_root, images, reference, demo_config,
                                                             tmp_path):
    """Copy only mlflow.db + mlartifacts of the demo's run root, take the original away, and serve
    models:/conceptlens-filter@champion from the copy: the answers over HTTP are the in-process ones, and
    the replica's models are the files inside the copied store."""
    copy = tmp_path / "elsewhere"
    copy.mkdir()
    shutil.copy2(run_root / "mlflow.db", copy)
    shutil.copytree(run_root / "mlartifacts", copy / "mlartifacts")
    bundles = [p.parent for p in (copy / "mlartifacts").rglob("filter.json")]
    assert bundles
    machine = [str(run_root).encode(), str(REPO).encode()]
    for path in (p for b in bundles for p in b.rglob("*") if p.is_file()):  # nothing names where it was made
        data = path.read_bytes()
        assert not any(m in data for m in machine), path
    away = run_root.with_name(f"{run_root.name}-away")
    run_root.rename(away)
    try:
        config = serve_config(url, demo_config, [f"run.root={tmp_path / 'no-runs-here'}", "run.device=cpu",
                                                 f"mlflow.tracking_uri=sqlite:///{copy / 'mlflow.db'}"])
        deploy(config)
        deadline = time.time() + 120
        while not str(model_info()["models"]["classifier"]).startswith(str(copy)):
            assert time.time() < deadline, "no replica serves the copied store"
            time.sleep(1)
        info = model_info()
        assert info["bundle"] == "models:/conceptlens-filter@champion"
        assert all(str(p).startswith(str(copy / "mlartifacts")) for p in info["models"].values()), info["models"]
        body = {"images": [b64(data) for _, data in images]}
        r = requests.post(f"{url}/predict", json=body, headers=AUTH, timeout=60)
        assert r.status_code == 200, r.text
        assert_agrees(r.json()["predictions"], reference, range(len(images)))
    finally:
        away.rename(run_root)
