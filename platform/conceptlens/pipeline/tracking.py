"""MLflow tracking: one store for every run under ``run.root``, a pipeline run per ``run.name``, a nested run
per command.

Default store: ``sqlite:///<run.root>/mlflow.db`` with artifacts in ``<run.root>/mlartifacts`` (any sqlite
store keeps its artifacts in ``mlartifacts`` beside the file); ``mlflow.tracking_uri`` (e.g.
``http://127.0.0.1:5000``) points anywhere else. In the experiment ``mlflow.experiment``, the pipeline run
(tags ``conceptlens.kind=pipeline``, ``conceptlens.run=<name>``) is found or created, and each command
is a child run ``<name>/<command>``; a re-run adds a child. Children and parent carry the tags of
:func:`run_tags` (world, models, scenario set), so two runs line up command by command; the parent
also holds each child's metrics as ``<command>.<metric>``.
"""
from __future__ import annotations

import json
import math
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from conceptlens.config import Config, config_hash, to_dict, world_key
from conceptlens.pipeline.runs import log, model_spec

PIPELINE, COMMAND, PART = "pipeline", "command", "part"  # values of the tag conceptlens.kind
SQLITE = "sqlite:///"


def tracking_uri(cfg: Config) -> str:
    """``mlflow.tracking_uri``, else the store shared by every run under ``run.root``."""
    if cfg.mlflow.tracking_uri:
        return cfg.mlflow.tracking_uri
    return f"{SQLITE}{Path(cfg.run.root).resolve() / 'mlflow.db'}"


def sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (``sqlite:////abs/x.db`` or ``sqlite:///relative.db``)."""
    if not uri.startswith(SQLITE):
        return None
    return Path(uri[len(SQLITE):].split("?", 1)[0])


def artifact_folder(uri: str) -> Path | None:
    """Where a sqlite store keeps its artifacts: ``mlartifacts`` beside the database file."""
    db = sqlite_file(uri)
    return db.resolve().parent / "mlartifacts" if db else None


def ui_command(uri: str) -> str:
    """How to look at a store: ``mlflow ui`` for a database, the address of a server."""
    if uri.startswith(("http://", "https://")):
        return f"open {uri}"
    return f"mlflow ui --backend-store-uri {uri}"


def old_store_hint(cfg: Config) -> str | None:
    """One line when the run folder holds its own store (the layout before the shared one), else None."""
    old = Path(cfg.run.root) / cfg.run.name / "mlflow.db"
    if cfg.mlflow.tracking_uri or not old.is_file():
        return None
    uri = f"{SQLITE}{old.resolve()}"
    return (f"mlflow: {old} is this run's store from an older layout; new results go to the shared store "
            f"{tracking_uri(cfg)}. Old results: `{ui_command(uri)}`; to keep logging there: "
            f"mlflow.tracking_uri={uri}")


def flatten(tree: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists are indexed (``a.0.b``)."""
    out = {}
    items = tree.items() if isinstance(tree, dict) else enumerate(tree)
    for key, value in items:
        name = f"{prefix}{key}"
        if isinstance(value, (dict, list, tuple)) and value:
            out |= flatten(value, f"{name}.")
        else:
            out[name] = value
    return out


def numeric_metrics(metrics: dict) -> dict[str, float]:
    """The finite numbers of a (nested) metrics dict, with MLflow-safe names."""
    return {k.replace("[", "_").replace("]", ""): float(v) for k, v in flatten(metrics).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def on_world(cfg: Config) -> bool:
    """Whether the run reads its own ConceptWorld: no ``data.source``, or the world's manifest that ``embed``
    recorded as its source."""
    manifest = Path(cfg.run.root) / cfg.run.name / "world" / "manifest.parquet"
    return not cfg.data.source or Path(cfg.data.source).resolve() == manifest.resolve()


def world_hash(cfg: Config) -> str | None:
    """The config hash of the ConceptWorld the run built (its cache folder's name, recorded by ``world``
    in ``models.json``); None before ``world`` ran."""
    models = Path(cfg.run.root) / cfg.run.name / "world" / "models.json"
    world = json.loads(models.read_text()).get("world") if models.is_file() else None
    return Path(world).name if world else None


def run_tags(cfg: Config) -> dict[str, str]:
    """``conceptlens.run`` and what makes two runs comparable: ``conceptlens.world_hash``,
    ``conceptlens.scenarios`` (names) and ``conceptlens.scenarios_hash`` for ConceptWorld runs,
    ``conceptlens.classifier_hash`` and ``conceptlens.vlm_hash`` once the models exist."""
    tags = {"conceptlens.run": cfg.run.name}
    if on_world(cfg):
        scenarios = cfg.world.scenarios
        tags["conceptlens.scenarios"] = ",".join(s.name for s in scenarios) or "none"
        tags["conceptlens.scenarios_hash"] = config_hash(*world_key(cfg.world)["scenarios"]) if scenarios else "none"
        if world := world_hash(cfg):
            tags["conceptlens.world_hash"] = world
    try:
        fingerprint = model_spec(cfg).fingerprint()
    except (ValueError, OSError, KeyError):  # no models yet (`world` before training them)
        fingerprint = {}
    tags |= {f"conceptlens.{model}_hash": h for model, h in fingerprint.items()}
    return tags


def experiment_id(name: str, uri: str) -> str:
    """The experiment ``name``, created when missing (a sqlite store's artifacts beside its file)."""
    import mlflow

    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    artifacts = artifact_folder(uri)
    return mlflow.create_experiment(name, artifact_location=artifacts.as_uri() if artifacts else None)


def pipeline_run(client, experiment: str, name: str, tags: dict[str, str]) -> str:
    """The id of the pipeline run of ``name`` (the oldest one if several), created when missing."""
    found = [r for r in client.search_runs([experiment], f"tags.`conceptlens.kind` = '{PIPELINE}'",
                                           order_by=["attributes.start_time ASC"], max_results=50000)
             if r.data.tags.get("conceptlens.run") == name]  # filtered here: a name may hold quotes
    if found:
        return found[0].info.run_id
    return client.create_run(experiment, run_name=name, tags=tags | {"conceptlens.kind": PIPELINE}).info.run_id


@contextmanager
def mlflow_run(cfg: Config, command: str) -> Iterator["mlflow.ActiveRun"]:
    """A child run ``<run.name>/<command>`` of the run's pipeline run, with the whole config as parameters.

    When the command finishes, the tags are set again (``world`` creates the models it is tagged by),
    the parent takes the child's metrics as ``<command>.<metric>`` and the last command's status."""
    import mlflow
    from mlflow.entities import Metric, RunTag

    uri = tracking_uri(cfg)
    if hint := old_store_hint(cfg):
        log(hint)
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    experiment = experiment_id(cfg.mlflow.experiment, uri)
    mlflow.set_experiment(experiment_id=experiment)
    tags = run_tags(cfg)
    parent = pipeline_run(client, experiment, cfg.run.name, tags)
    child_tags = tags | {"command": command, "conceptlens.command": command, "conceptlens.kind": COMMAND}
    status = "FAILED"
    try:
        with mlflow.start_run(experiment_id=experiment, run_name=f"{cfg.run.name}/{command}",
                              parent_run_id=parent, tags=child_tags) as run:
            params = {k: str(v)[:500] for k, v in flatten(to_dict(cfg)).items()}
            items = list(params.items())
            for i in range(0, len(items), 100):  # MLflow takes at most 100 params per call
                mlflow.log_params(dict(items[i:i + 100]))
            yield run
            tags = run_tags(cfg)
            mlflow.set_tags(tags)
        status = "FINISHED"
        now = int(time.time() * 1000)
        metrics = client.get_run(run.info.run_id).data.metrics
        client.log_batch(parent, metrics=[Metric(f"{command}.{k}", v, now, 0) for k, v in metrics.items()])
    finally:
        client.log_batch(parent, tags=[RunTag(k, v) for k, v in tags.items()])
        client.set_terminated(parent, status)


def log_results(metrics: dict, *paths: Path, tags: dict[str, str] | None = None) -> None:
    """Log numeric metrics, files and folders (as a folder of that name) and tags to the active run."""
    import mlflow

    mlflow.log_metrics(numeric_metrics(metrics))
    for path in map(Path, paths):
        if path.is_dir():
            mlflow.log_artifacts(str(path), artifact_path=path.name)
        elif path.is_file():
            mlflow.log_artifact(str(path))
    if tags:
        mlflow.set_tags(tags)


def log_child_runs(children: list[dict], tags: dict[str, str] | None = None) -> None:
    """One nested run under the active (command) run per ``{"name", "params", "metrics"}`` (e.g. each pipeline
    of a grid), logged in one batch call each, with the command's tags and ``conceptlens.kind=part``."""
    import mlflow
    from mlflow.entities import Metric, Param

    parent = mlflow.active_run()
    client = mlflow.MlflowClient()
    now = int(time.time() * 1000)
    inherited = {k: v for k, v in client.get_run(parent.info.run_id).data.tags.items() if not k.startswith("mlflow.")}
    for child in children:
        run = client.create_run(parent.info.experiment_id, run_name=child["name"],
                                tags=inherited | (tags or {}) | {"mlflow.parentRunId": parent.info.run_id,
                                                                 "conceptlens.kind": PART})
        client.log_batch(run.info.run_id,
                         metrics=[Metric(k, v, now, 0) for k, v in numeric_metrics(child["metrics"]).items()],
                         params=[Param(k, str(v)[:500]) for k, v in flatten(child["params"]).items()])
        client.set_terminated(run.info.run_id, "FINISHED")
