"""conceptlens serve: the runtime filter as an HTTP endpoint on a local Ray Serve, until Ctrl-C.

Serves ``serve.bundle`` (a bundle folder, or ``models:/name@alias`` in the MLflow registry of
``mlflow.tracking_uri``, by default the store under ``run.root``, also a copy of it on another
machine; default: this run's ``monitor/bundle``) on ``serve.host:serve.port`` (127.0.0.1:8000): POST
``/predict`` with images as multipart ``files`` or JSON ``{"images": [base64, ...]}`` answers per
image the label, the verdict (accept / likely-misclassified / likely-adversarial), both scores and
the concepts behind it; ``/classify`` the bare classifier; ``/healthz``; docs at ``/docs``. Set the
bearer token in the environment variable ``serve.token_env`` (CONCEPTLENS_TOKEN) before starting;
without it serve refuses to start, unless ``serve.allow_anonymous=true`` (an open endpoint, with a
warning). A bundle whose filter reads its concepts from the aligned encoder features (``monitor.concepts_from:
aligned``) is served by the classifier alone, without the VLM's image tower. Each replica asks for
``serve.num_cpus`` (unset: Ray's CPUs / ``serve.max_replicas``, at most 1); while replicas start, one line says
what is pending and why, each time that changes. For a cluster, deploy serve/config.yaml (``serve deploy``) or
infra/rayservice.yaml instead.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Sequence

from conceptlens.cli import parse_config
from conceptlens.config import Config


def bundle_uri(cfg: Config) -> str:
    return cfg.serve.bundle or str(Path(cfg.run.root) / cfg.run.name / "monitor" / "bundle")


def find_bundle(cfg: Config, bundle: str) -> str | None:
    """Why ``bundle`` cannot be served, in one line, or None; the registry is asked, nothing is downloaded."""
    from conceptlens.pipeline.registry import artifact_location, is_registry_uri, rebased
    from conceptlens.pipeline.tracking import old_store_hint, tracking_uri

    if not is_registry_uri(bundle):
        if (Path(bundle) / "filter.json").is_file():
            return None
        return (f"no filter bundle at {bundle}; run `conceptlens monitor` first "
                f"or set serve.bundle=FOLDER or models:/NAME@ALIAS")
    from mlflow.exceptions import MlflowException

    store = tracking_uri(cfg)
    try:
        rebased(artifact_location(bundle, store), store)
    except (MlflowException, FileNotFoundError) as err:
        reason = str(getattr(err, "message", err)).splitlines()[0]
        hint = old_store_hint(cfg)
        return f"{bundle} cannot be read from the MLflow store {store}: {reason}" + (f" ({hint})" if hint else "")
    return None


def usage(cfg: Config) -> str:
    """The URL and a curl example."""
    s = cfg.serve
    url = f"http://{s.host}:{s.port}"
    auth = f'-H "Authorization: Bearer ${s.token_env}" ' if os.environ.get(s.token_env) else ""
    return "\n".join([f"serving {bundle_uri(cfg)} at {url}  (docs: {url}/docs)",
                      f"  curl {auth}-F files=@image.png {url}/predict",
                      f"  curl {auth}-H 'Content-Type: application/json' "
                      f"-d '{{\"images\": [\"'$(base64 -w0 image.png)'\"]}}' {url}/predict",
                      "Ctrl-C stops the server."])


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_config("serve", __doc__, argv)
    s, bundle = cfg.serve, bundle_uri(cfg)
    problem = find_bundle(cfg, bundle)
    if problem:
        print(f"conceptlens serve: {problem}", file=sys.stderr)
        return 2

    from ray import serve

    from conceptlens.pipeline.raydata import init_ray
    from conceptlens.serve.app import bearer_token, build_app, replica_cpus
    from conceptlens.serve.startup import PendingWatcher

    try:
        bearer_token(s.token_env, s.allow_anonymous)  # fail closed before Ray starts (an open endpoint logs a warning)
    except ValueError as err:
        print(f"conceptlens serve: {err}", file=sys.stderr)
        return 2

    start = time.monotonic()
    print(f"serve: starting Ray Serve and the replicas of {bundle}", flush=True)
    init_ray(cfg.ray)
    serve.start(http_options={"host": s.host, "port": s.port})
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop cleanly under a process manager too
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C even where the shell started us ignoring it
    try:
        app = build_app(cfg)
        asks = {"CPU": replica_cpus(s), "GPU": s.num_gpus}
        print(f"serve: {s.min_replicas}-{s.max_replicas} replicas of {asks['CPU']:g} CPU"
              + (f", {s.num_gpus:g} GPU" if s.num_gpus else "") + " each (serve.num_cpus, serve.num_gpus)", flush=True)
        with PendingWatcher("conceptlens", asks, lambda line: print(line, flush=True)):  # a line when it changes
            serve.run(app, name="conceptlens", route_prefix="/")
        print(f"serve: ready in {time.monotonic() - start:.1f} s (Ray, Serve and the replicas)", flush=True)
        print(usage(cfg), flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    except RuntimeError as err:  # a deployment that fails to start (bad bundle, missing checkpoint)
        print(f"conceptlens serve: {err}", file=sys.stderr)
        return 1
    finally:
        serve.shutdown()


if __name__ == "__main__":
    sys.exit(main())
