"""MLflow tracking: one MLflow run per command, with the config, metrics and the command's folder.

Default store: ``sqlite:///<run.root>/<run.name>/mlflow.db`` with artifacts beside it; any
``mlflow.tracking_uri`` (e.g. ``http://127.0.0.1:5000``) works the same.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from conceptlens.config import Config, to_dict


def tracking_uri(cfg: Config) -> str:
    if cfg.mlflow.tracking_uri:
        return cfg.mlflow.tracking_uri
    return f"sqlite:///{(Path(cfg.run.root) / cfg.run.name).resolve() / 'mlflow.db'}"


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


@contextmanager
def mlflow_run(cfg: Config, command: str) -> Iterator["mlflow.ActiveRun"]:
    """Start an MLflow run for ``command`` with the whole config as parameters."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(cfg))
    experiment = mlflow.get_experiment_by_name(cfg.mlflow.experiment)
    if experiment is None:
        artifacts = None
        if tracking_uri(cfg).startswith("sqlite:"):
            artifacts = (Path(cfg.run.root) / cfg.run.name / "mlartifacts").resolve().as_uri()
        mlflow.create_experiment(cfg.mlflow.experiment, artifact_location=artifacts)
    mlflow.set_experiment(cfg.mlflow.experiment)
    with mlflow.start_run(run_name=f"{cfg.run.name}/{command}", tags={"command": command,
                                                                     "conceptlens.run": cfg.run.name}) as run:
        params = {k: str(v)[:500] for k, v in flatten(to_dict(cfg)).items()}
        items = list(params.items())
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per call
            mlflow.log_params(dict(items[i:i + 100]))
        yield run


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
