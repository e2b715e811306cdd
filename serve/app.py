"""The runtime filter as a Ray Serve application: the app builder.

``POST /predict`` takes images (multipart field ``files``, or JSON ``{"images": [base64, ...]}``)
and answers per image the classifier's ``label`` and ``confidence``, the filter's ``verdict``
(accept / likely-misclassified / likely-adversarial), both ``scores`` and the ``concepts`` behind
the verdict. ``POST /classify`` runs only the classifier (the filter's overhead is the
difference); ``GET /healthz`` answers once a replica's models are loaded. OpenAPI docs at ``/docs`` and
``/openapi.json``, public (see :data:`DOCS_URL`).

One deployment, :class:`~serve.deployments.FilterModel`: HTTP ingress and models in one replica, so a request
crosses one hop (Serve's proxy -> replica) and images of concurrent requests share model batches in-process.
The modules, one responsibility each: :mod:`serve.schemas` (request and answer schemas), :mod:`serve.limits`
(bearer token, body size), :mod:`serve.parsing` (parsing and decoding untrusted images), :mod:`serve.batching`
(:class:`Batcher`), :mod:`serve.model` (the bundle's models and filter, :func:`judge`),
:mod:`serve.deployments` (the Serve deployment) and this one, which binds them from a Config.

The models come from one bundle (a folder or ``models:/name@alias``, which carries the models' files); a bundle
whose filter reads its concepts from the aligned encoder features (``concepts_from: aligned``) runs the
classifier alone, without the VLM's image tower. Thresholds, concepts per answer and batching change without
restart through ``user_config``. :func:`build_app` binds the deployment from a Config; :func:`app_builder` is the
import path of ``serve/config.yaml`` (``serve deploy``, KubeRay RayService).
"""
from __future__ import annotations

import os
from pathlib import Path

from ray.serve import Application

from conceptlens.config import ServeConfig
from conceptlens.pipeline.registry import is_registry_uri
from conceptlens.serve.batching import Batcher
from conceptlens.serve.deployments import DOCS_URL, OPENAPI_URL, FilterModel, api
from conceptlens.serve.limits import LIMIT_KEYS, authorize, bearer_token, read_body
from conceptlens.serve.model import USER_CONFIG_KEYS, judge, looks_like
from conceptlens.serve.parsing import IMAGE_FORMATS, decode_images, decode_upload, json_depth, parse_images
from conceptlens.serve.schemas import Concept, Error, Label, Labels, LooksLike, Prediction, Predictions, Scores

__all__ = ["DOCS_URL", "IMAGE_FORMATS", "LIMIT_KEYS", "OPENAPI_URL", "USER_CONFIG_KEYS", "Batcher", "Concept",
           "Error", "FilterModel", "Label", "Labels", "LooksLike", "Prediction", "Predictions", "Scores", "api",
           "app_builder", "authorize", "bearer_token", "build_app", "decode_images", "decode_upload", "json_depth",
           "judge", "looks_like", "parse_images", "read_body", "replica_cpus", "user_config"]


# Serve runs a replica's code on an event loop of its own thread by default, so every request crosses threads twice
# inside the replica; on the replica's main loop it does not (our handlers never block: small bodies decode in
# microseconds, larger ones and the models run in threads). benchmarks/serve_load.py: about +40 % single-image
# throughput with batching on 2 cores. Set per replica, so it holds on any cluster and for `serve deploy`.
REPLICA_ENV = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}


def user_config(settings: ServeConfig) -> dict:
    """The model's hot-reloadable settings (Serve ``user_config``)."""
    return {"thresholds": dict(settings.thresholds), "top_concepts": settings.top_concepts,
            "max_batch_size": settings.max_batch_size, "batch_wait_timeout_s": settings.batch_wait_timeout_s}


def ray_cpus() -> float:
    """The CPUs of the Ray cluster this process is connected to; the machine's cores when Ray is not up."""
    import ray

    if ray.is_initialized():
        return float(ray.cluster_resources().get("CPU", 0.0)) or float(os.cpu_count() or 1)
    return float(os.cpu_count() or 1)


def replica_cpus(settings: ServeConfig, cpus: float | None = None) -> float:
    """The CPUs each replica asks Ray for: ``serve.num_cpus`` when set, else the cluster's ``cpus`` (default: what
    Ray sees) shared by ``max_replicas``, at most 1, so that every replica the autoscaler may start can be
    scheduled (on 2 cores: 1 each for 2 replicas; 0.5 each on one core). A fraction is honest here: a replica's
    torch runs one intra-op thread, and its HTTP and decoding wait while the model runs."""
    if settings.num_cpus is not None:
        return float(settings.num_cpus)
    cpus = ray_cpus() if cpus is None else cpus
    return round(max(min(1.0, cpus / max(settings.max_replicas, 1)), 0.05), 2)


def build_app(cfg) -> Application:
    """The deployment bound from a Config (``cfg.serve``, ``cfg.run``, ``cfg.mlflow``): the bundle is
    ``serve.bundle`` (a folder, or a registry URI in the store of ``mlflow.tracking_uri``, by default the
    one under ``run.root``), else the run's ``monitor/bundle``. Without a bearer token in ``serve.token_env``
    it raises ValueError before anything is deployed, unless ``serve.allow_anonymous``."""
    from conceptlens.pipeline.tracking import tracking_uri

    s = cfg.serve
    bearer_token(s.token_env, s.allow_anonymous)  # fail closed; the replica checks again where it runs
    bundle = s.bundle or str(Path(cfg.run.root) / cfg.run.name / "monitor" / "bundle")
    registry = is_registry_uri(bundle)
    bundle = bundle if registry else str(Path(bundle).resolve())
    device = cfg.run.device if cfg.run.device != "auto" else ("cuda" if s.num_gpus > 0 else "cpu")
    scaling = {"min_replicas": s.min_replicas, "max_replicas": s.max_replicas,
               "target_ongoing_requests": s.target_ongoing_requests}
    limits = {k: getattr(s, k) for k in LIMIT_KEYS}
    return FilterModel.options(
        autoscaling_config=scaling, max_ongoing_requests=max(s.max_ongoing_requests, s.max_batch_size),
        ray_actor_options={"num_cpus": replica_cpus(s), "num_gpus": s.num_gpus,
                           "runtime_env": {"env_vars": dict(REPLICA_ENV)}}, user_config=user_config(s),
    ).bind(bundle, tracking_uri(cfg) if registry else None, device, limits)


def app_builder(args: dict) -> Application:
    """The import path of ``serve/config.yaml``: ``args`` ``config`` (YAML files), ``overrides``
    (``key=value``) and ``serve`` (ServeConfig fields) build the Config of :func:`build_app`."""
    from omegaconf import OmegaConf

    from conceptlens.config import load_config

    cfg = load_config(list(args.get("config", [])), list(args.get("overrides", [])))
    merged = OmegaConf.merge(OmegaConf.structured(cfg.serve), dict(args.get("serve") or {}))
    cfg.serve = OmegaConf.to_object(merged)
    return build_app(cfg)
