from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def demo_config(tmp_path_factory) -> str:
    """The demo's config: tests train (or reuse from the cache) exactly the demo's world and models. With
    ``CONCEPTLENS_TEST_OVERRIDES`` set (``key=value`` pairs, e.g. ``world.model_seed=1`` to run the suite on models
    trained at another seed), the demo's config with those overrides."""
    import os

    from omegaconf import OmegaConf

    demo = REPO / "conf" / "demo.yaml"
    overrides = os.environ.get("CONCEPTLENS_TEST_OVERRIDES", "").split()
    if not overrides:
        return str(demo)
    merged = OmegaConf.merge(OmegaConf.load(demo), OmegaConf.from_dotlist(overrides))
    path = tmp_path_factory.mktemp("conf") / "demo.yaml"
    OmegaConf.save(merged, path)
    return str(path)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory, demo_config):
    """A run root where `conceptlens world` has built the demo's world (models cached across sessions)."""
    from conceptlens.jobs import world

    root = tmp_path_factory.mktemp("runs")
    assert world.main(["--config", demo_config, f"run.root={root}"]) == 0
    return root


@pytest.fixture(scope="session")
def demo_done(demo_run, demo_config):
    """`conceptlens demo` run to the end on ``demo_run`` (world reused): its exit code and console output."""
    import contextlib
    import io

    from conceptlens.jobs import demo

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = demo.main(["--config", demo_config, f"run.root={demo_run}"])
    return code, out.getvalue()


@pytest.fixture(scope="module")
def local_ray():
    """A fresh small local Ray for the module (any earlier one shut down first)."""
    import ray

    ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=256 * 2**20,
             log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def mlflow_cli():
    """Start a real `mlflow server` / `mlflow ui` on a free loopback port: ``start("server", *args) -> url``,
    ready when its /health answers; every one started is stopped at the end of the module."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    import requests

    started = []

    def start(*command: str) -> str:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", *command, "--host", "127.0.0.1", "--port", str(port),
                                 "--workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        started.append(proc)
        url, deadline = f"http://127.0.0.1:{port}", time.time() + 120
        while True:
            try:
                if requests.get(f"{url}/health", timeout=2).ok:
                    return url
            except (requests.ConnectionError, requests.Timeout):  # not listening yet, or busy starting on a loaded machine
                pass
            assert proc.poll() is None and time.time() < deadline, f"mlflow {command[0]} did not start"
            time.sleep(0.5)

    yield start
    for proc in started:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
