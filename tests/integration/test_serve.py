"""`conceptlens serve`'s application over real HTTP on 127.0.0.1, against a local Ray Serve.

One Ray and one Serve for the module, and one app: serve/config.yaml deployed as `serve deploy` does,
the filter registered by the demo (models:/conceptlens-demo-filter@champion). It answers like the
Embedder + ConceptFilter run in this process, rejects bad input with 4xx JSON and keeps serving,
keeps /healthz from calling the model more than once per interval and shows its docs without a token;
and changes its thresholds in place when the config's user_config changes, without a new replica.
Without a token the app refuses to start (checked without Ray; test_user_data serves an anonymous
endpoint from a bundle folder). Last, the registered filter is served from a copy of the MLflow store
alone, the original run folder taken away. Batching is checked as plain functions (the filter's
answers, the Batcher's batches) and through the replica's batch counts.
"""
from __future__ import annotations

import asyncio
import base64
import io
import math
import os
import re
import shutil
import socket
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
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
def served_config(url, run_root, demo_config) -> dict:
    """serve/config.yaml deployed once for the module as `serve deploy` does: the registered bundle
    (models:/conceptlens-demo-filter@champion), one small replica each, tight limits for the bad-input tests."""
    config = serve_config(url, demo_config, [f"run.root={run_root}", "run.device=cpu"])
    config["applications"][0]["args"]["serve"] |= {"max_request_bytes": 2**20, "max_image_pixels": 10**6,
                                                   "max_request_pixels": 4 * 10**6, "max_images": 8}
    deployment(config, "FilterModel")["user_config"]["batch_wait_timeout_s"] = 0.05
    deploy(config)
    return config


@pytest.fixture(scope="module")
def served(served_config, url) -> str:
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


def test_batcher_batches_what_arrives_while_the_model_runs():
    """Plain asyncio, no Ray: the inputs that arrive while a batch runs make up the next batch (at most
    max_size), not batches of their own; a model error reaches every caller of its batch, and the next runs."""
    from conceptlens.serve.app import Batcher

    sizes, running, release = [], threading.Event(), threading.Event()

    def model(items: list) -> list:
        sizes.append(len(items))
        running.set()
        release.wait(30)
        if "bad" in items:
            raise ValueError("bad input")
        return [2 * i for i in items]

    async def scenario() -> None:
        batcher = Batcher(model, max_size=8, wait_s=0.01)
        first = asyncio.gather(*(batcher(i) for i in range(4)))
        await asyncio.to_thread(running.wait, 30)  # the first batch runs ...
        later = asyncio.gather(*(batcher(i) for i in range(10)))  # ... while 10 more arrive
        while len(batcher.waiting) < 10:
            await asyncio.sleep(0)
        release.set()
        assert await first == [0, 2, 4, 6] and await later == [2 * i for i in range(10)]
        failed = await asyncio.gather(batcher("bad"), batcher(1), return_exceptions=True)
        assert [type(a) for a in failed] == [ValueError, ValueError]
        assert await batcher(5) == 10

    asyncio.run(scenario())
    assert sizes == [4, 8, 2, 2, 1]


def test_multipart_batch_agrees_with_in_process(served, images, reference):
    files = [("files", (name, data, "image/png")) for name, data in images[:4]]
    r = requests.post(f"{served}/predict", files=files, headers=AUTH, timeout=60)
    assert r.status_code == 200, r.text
    answers = r.json()["predictions"]
    assert [a["name"] for a in answers] == [name for name, _ in images[:4]]
    assert_agrees(answers, reference, range(4))
    assert model_info()["batches"]["largest"] > 1  # the four images of the request shared a model call
    assert all(("looks_like" in a) == (a["verdict"] != "accept") for a in answers)


def test_a_flagged_answer_names_the_failure_mode_it_looks_like(run_root, reference):
    """With every input flagged (thresholds 0), each answer carries the nearest failure mode of the bundle (the
    demo's ran rootcause and explain first), in the served schema."""
    from conceptlens.runtime.failure_modes import FailureModes
    from conceptlens.serve.app import Prediction

    modes = FailureModes.load_optional(run_root / "demo" / "monitor" / "bundle")
    assert modes is not None
    answers = judge(reference["filter"], reference["columns"], thresholds={"misclassified": 0.0, "adversarial": 0.0},
                    modes=modes)
    for answer in answers:
        alert = Prediction(name="x", **answer).looks_like
        assert alert is not None and alert.text.startswith(("looks like: ", "none close enough"))
        assert alert.close_enough == alert.text.startswith("looks like: ")
        if alert.close_enough:
            assert alert.distance <= 1 and alert.cluster is not None


def test_base64_json_agrees_with_in_process(served, images, reference):
    body = {"images": [b64(images[4][1]), "data:image/png;base64," + b64(images[5][1])]}
    r = requests.post(f"{served}/predict", json=body, headers=AUTH, timeout=60)
    assert r.status_code == 200, r.text
    answers = r.json()["predictions"]
    assert [a["name"] for a in answers] == ["images[0]", "images[1]"]
    assert_agrees(answers, reference, range(4, 6))
    r = requests.post(f"{served}/classify", json=body, headers=AUTH, timeout=60)
    assert [a["label"] for a in r.json()["predictions"]] == reference["label"][4:6]


def test_docs_are_public_and_show_only_the_schema(served):
    """The decision of serve/app.py (DOCS_URL): /docs and /openapi.json answer without a token and name
    nothing of the bundle; /redoc is off."""
    from conceptlens.serve.app import DOCS_URL, OPENAPI_URL

    r = requests.get(f"{served}{OPENAPI_URL}", timeout=10)
    assert r.status_code == 200
    schema = r.json()
    assert set(schema["paths"]["/predict"]["post"]["requestBody"]["content"]) == {"multipart/form-data",
                                                                                  "application/json"}
    info = model_info()
    assert not any(name in r.text for name in [*info["classes"], info["bundle"]])
    assert requests.get(f"{served}{DOCS_URL}", timeout=10).status_code == 200
    assert requests.get(f"{served}/redoc", timeout=10).status_code == 404


def test_health_asks_the_model_at_most_once_per_interval(served):
    """50 concurrent /healthz requests share one model probe (two when they straddle an interval's end)."""
    interval = ServeConfig().health_interval_s
    before, start = model_info()["health_checks"], time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: requests.get(f"{served}/healthz", timeout=30), range(50)))
    elapsed = time.monotonic() - start
    assert [(r.status_code, r.json()) for r in answers] == [(200, {"status": "ok"})] * 50
    assert model_info()["health_checks"] - before <= 1 + math.ceil(elapsed / interval)


def test_bearer_token(served, images):
    from conceptlens.serve.app import authorize

    files = [("files", images[0])]
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        r = requests.post(f"{served}/predict", files=files, headers=headers, timeout=30)
        assert r.status_code == 401 and "token" in r.json()["error"]
        assert r.headers["www-authenticate"] == "Bearer"
    authorize(None, None)  # no token, which only serve.allow_anonymous allows: open


def test_no_token_refuses_to_start_unless_anonymous_is_allowed(run_root, demo_config, monkeypatch, capsys):
    """Fail closed, without Ray: `conceptlens serve`, build_app and the ingress's constructor (where a replica
    runs, also for `serve deploy`) refuse an unset or empty token, naming the variable and the way out."""
    from conceptlens.config import load_config
    from conceptlens.jobs import serve as job
    from conceptlens.serve.app import FilterModel, build_app

    env, why = "CONCEPTLENS_TEST_NO_TOKEN", r"CONCEPTLENS_TEST_NO_TOKEN .*serve\.allow_anonymous=true"
    ingress = FilterModel.func_or_class.__bases__[0]  # the class under Serve's ingress wrapper
    bundle = str(run_root / "demo" / "monitor" / "bundle")
    cfg = load_config([demo_config], [f"run.root={run_root}", "run.device=cpu"])
    for value in (None, ""):
        if value is None:
            monkeypatch.delenv(env, raising=False)
        else:
            monkeypatch.setenv(env, value)
        cfg.serve = ServeConfig(token_env=env)
        with pytest.raises(ValueError, match=why):
            build_app(cfg)
        with pytest.raises(ValueError, match=why):  # before any model is loaded
            ingress(bundle, None, "cpu", {"token_env": env, "allow_anonymous": False})
        capsys.readouterr()
        assert job.main(["--config", demo_config, f"run.root={run_root}", f"serve.token_env={env}"]) == 2
        assert re.search(why, capsys.readouterr().err)
    cfg.serve = ServeConfig(token_env=env, allow_anonymous=True)
    build_app(cfg)  # an open endpoint (test_user_data serves one), with a warning
    assert ingress(bundle, None, "cpu", {"token_env": env, "allow_anonymous": True}).token is None


def test_bad_input_is_a_4xx_and_the_replica_keeps_serving(served, images):
    """Each bad request gets its 4xx with a JSON error, and the next good one (brackets in a string of an extra
    key, which the JSON depth check skips) its answer."""
    good, name = images[0][1], images[0][0]
    deep = 100_000
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
        # 5 headers of 1000x1000 over 64 bytes each: over the 4e6 pixels of the request, so none is decoded ...
        "request over its pixel budget": (413, {"json": {"images": [b64(png_header(1000, 1000))] * 5}}),
        # ... while 4 are within it, are decoded, and fail as the truncated files they are
        "within the budget, undecodable": (400, {"json": {"images": [b64(png_header(1000, 1000))] * 4}}),
        "nested 100000 deep": (400, {"data": b"[" * deep + b"]" * deep,
                                     "headers": {"Content-Type": "application/json"}}),
        "nested under images": (400, {"data": b'{"images": ' + b"[" * deep + b"]" * deep + b"}",
                                      "headers": {"Content-Type": "application/json"}}),
        "huge number": (400, {"data": b'{"images": [], "n": ' + b"9" * 100_000 + b"}",
                              "headers": {"Content-Type": "application/json"}}),
        "NaN": (400, {"data": b'{"images": [NaN]}', "headers": {"Content-Type": "application/json"}}),
        "array root": (400, {"json": [b64(good)]}),
        "string root": (400, {"json": b64(good)}),
    }
    messages = {"request over its pixel budget": "4000000 per request (serve.max_request_pixels)",
                "within the budget, undecodable": "could not be decoded", "nested 100000 deep": "nested deeper than",
                "nested under images": "nested deeper than", "huge number": "a number of 100000 characters",
                "array root": "is an array, not an object", "string root": "is a string, not an object"}
    again = {"images": [b64(good)], "note": 'brackets in a string: "[[[[[[[[[[{{{{{{{{{{\\"[[[[[[[[["'}
    for case, (status, kwargs) in cases.items():
        headers = AUTH | kwargs.pop("headers", {})
        r = requests.post(f"{served}/predict", headers=headers, timeout=30, **kwargs)
        assert r.status_code == status, (case, r.text)
        assert isinstance(r.json()["error"], str), case
        assert messages.get(case, "") in r.json()["error"], (case, r.text)
        r = requests.post(f"{served}/predict", json=again, headers=AUTH, timeout=30)
        assert r.status_code == 200 and r.json()["predictions"][0]["verdict"], (case, r.text)


def test_pixels_are_checked_before_decoding():
    """A header claiming 3000x3000 pixels over 64 bytes of data: rejected for its size (413), never decoded (400)."""
    from fastapi import HTTPException

    with pytest.raises(HTTPException) as err:
        decode_upload(png_header(3000, 3000), 48, 10**6)
    assert err.value.status_code == 413


def test_config_files_agree():
    """serve/config.yaml and the RayService's serveConfigV2 are valid Serve configs of the same application."""
    from ray.serve.schema import ServeDeploySchema

    from conceptlens.serve.app import REPLICA_ENV, USER_CONFIG_KEYS

    local = yaml.safe_load((REPO / "serve" / "config.yaml").read_text())
    service = yaml.safe_load(yaml.safe_load((REPO / "infra" / "rayservice.yaml").read_text())["spec"]["serveConfigV2"])
    apps = [ServeDeploySchema.model_validate(c).applications[0] for c in (local, service)]
    assert apps[0].import_path == apps[1].import_path == "conceptlens.serve.app:app_builder"
    assert [d.name for d in apps[0].deployments] == [d.name for d in apps[1].deployments] == ["FilterModel"]
    assert set(apps[0].args["serve"]) == set(apps[1].args["serve"])
    for app in apps:
        assert set(app.deployments[0].user_config) == set(USER_CONFIG_KEYS)
        assert app.deployments[0].ray_actor_options.runtime_env["env_vars"] == REPLICA_ENV  # as build_app sets it


def deployment(config: dict, name: str) -> dict:
    return next(d for d in config["applications"][0]["deployments"] if d["name"] == name)


def serve_config(url: str, demo_config: str, overrides: list[str]) -> dict:
    """serve/config.yaml as `serve deploy` takes it, on the test's port, one small replica."""
    config = yaml.safe_load((REPO / "serve" / "config.yaml").read_text())
    config["http_options"] = {"host": "127.0.0.1", "port": int(url.rsplit(":", 1)[1])}
    app = config["applications"][0]
    app["args"]["config"] = [demo_config]
    app["args"]["overrides"] = overrides
    deployment(config, "FilterModel")["autoscaling_config"] |= {"min_replicas": 1, "max_replicas": 1}
    deployment(config, "FilterModel")["ray_actor_options"]["num_cpus"] = 0.5
    return config


def deploy(config: dict) -> None:
    """What `serve deploy` does."""
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    _get_global_client().deploy_apps(ServeDeploySchema.model_validate(config), _blocking=True)


def test_registry_bundle_and_thresholds_without_restart(served, served_config, images):
    """The module's app serves models:/conceptlens-demo-filter@champion; a new user_config of its
    serve/config.yaml, deployed again, changes the verdicts on the same replica."""
    model = deployment(served_config, "FilterModel")

    def verdicts(threshold: float) -> list[str]:
        model["user_config"]["thresholds"] = {"misclassified": threshold, "adversarial": threshold}
        deploy(served_config)
        deadline = time.time() + 60
        while model_info()["thresholds"]["adversarial"] != threshold:
            assert time.time() < deadline, "user_config not applied"
            time.sleep(0.5)
        body = {"images": [b64(data) for _, data in images]}
        r = requests.post(f"{served}/predict", json=body, headers=AUTH, timeout=60)
        assert r.status_code == 200, r.text
        return [a["verdict"] for a in r.json()["predictions"]]

    before = model_info()
    assert before["bundle"] == "models:/conceptlens-demo-filter@champion"
    assert verdicts(1.0) == ["accept"] * len(images)
    assert all(v != "accept" for v in verdicts(0.0))
    assert model_info()["replica"] == before["replica"]


def test_a_registered_filter_travels_with_a_copy_of_the_store(url, run_root, images, reference, demo_config,
                                                             tmp_path):
    """Copy only mlflow.db + mlartifacts of the demo's run root, take the original away, and serve
    models:/conceptlens-demo-filter@champion from the copy: the answers over HTTP are the in-process ones, and
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
        assert info["bundle"] == "models:/conceptlens-demo-filter@champion"
        assert all(str(p).startswith(str(copy / "mlartifacts")) for p in info["models"].values()), info["models"]
        body = {"images": [b64(data) for _, data in images]}
        r = requests.post(f"{url}/predict", json=body, headers=AUTH, timeout=60)
        assert r.status_code == 200, r.text
        assert_agrees(r.json()["predictions"], reference, range(len(images)))
    finally:
        away.rename(run_root)


def test_a_replica_that_cannot_be_scheduled_is_named_in_one_line(url, run_root, demo_config):
    """An app whose replica asks more CPUs than Ray has: while it waits, the watcher of `conceptlens serve` says so in
    one line (printed once, not per poll), naming what a replica asks and what Ray has free."""
    from ray import serve
    from ray.serve.api import _run  # serve.run without waiting for the app to run (it never will)

    from conceptlens.config import load_config
    from conceptlens.serve.app import build_app, replica_cpus
    from conceptlens.serve.startup import PendingWatcher

    cfg = load_config([demo_config], [f"run.root={run_root}", "run.device=cpu"])
    cfg.serve = ServeConfig(min_replicas=1, max_replicas=1, num_cpus=3.0)
    lines: list[str] = []
    with PendingWatcher("unschedulable", {"CPU": replica_cpus(cfg.serve)}, lines.append, every=0.5):
        _run(build_app(cfg), name="unschedulable", route_prefix="/unschedulable", _blocking=False)
        deadline = time.time() + 30
        while not any("not enough" in line for line in lines) and time.time() < deadline:
            time.sleep(0.5)
        time.sleep(2)  # more polls, the same state: no more lines
    serve.delete("unschedulable")
    waiting = [line for line in lines if "not enough" in line]
    assert len(waiting) == 1, lines
    assert "FilterModel" in waiting[0] and "asks CPU 3" in waiting[0] and "free of CPU 2" in waiting[0]


def test_an_aligned_filter_is_served_without_the_vlm(url, run_root, images, reference, demo_config, tmp_path):
    """The demo's filter refitted with concepts_from aligned, bundled and served as its own app: the replica never
    builds the VLM, and its answers over HTTP are the aligned filter's on the classifier's columns in this process."""
    from ray import serve

    from conceptlens.config import load_config
    from conceptlens.jobs.monitor import load_filter, read_adversarial
    from conceptlens.pipeline.shards import read_rows
    from conceptlens.runtime.bundle import bundle_models, save_bundle
    from conceptlens.serve.app import build_app

    run = run_root / "demo"
    cfg = load_config([demo_config], [f"run.root={run_root}", "run.device=cpu"])
    calib = read_rows(run / "embed" / "embeddings", ["calib"], ["id"])
    adversarial, _ = read_adversarial(run / "attack" / "embeddings")
    filt = load_filter(run / "analyze", "aligned").fit(calib, adversarial["calib"] if adversarial else None,
                                                       fpr=cfg.monitor.fpr, ridge=cfg.analyze.ridge,
                                                       seed=cfg.monitor.seed)
    spec, size = bundle_models(run / "monitor" / "bundle")
    bundle = save_bundle(filt, tmp_path / "aligned", spec, image_size=size, run="demo")
    cfg.serve = ServeConfig(bundle=str(bundle), min_replicas=1, max_replicas=1, num_cpus=0.5)
    serve.run(build_app(cfg), name="aligned", route_prefix="/aligned")
    try:
        info = serve.get_deployment_handle("FilterModel", "aligned").info.remote().result(timeout_s=30)
        assert info["concepts_from"] == "aligned" and info["models"]["vlm"] is None
        files = [("files", (name, data, "image/png")) for name, data in images]
        r = requests.post(f"{url}/aligned/predict", files=files, headers=AUTH, timeout=60)
        assert r.status_code == 200, r.text
        classifier_only = {k: v for k, v in reference["columns"].items() if k != "vlm_embedding"}
        expected = judge(filt, classifier_only)
        answers = r.json()["predictions"]
        assert [a["verdict"] for a in answers] == [e["verdict"] for e in expected]
        for a, e in zip(answers, expected):
            assert a["label"] == e["label"]
            assert a["scores"] == pytest.approx(e["scores"], abs=1e-4)
    finally:
        serve.delete("aligned")
