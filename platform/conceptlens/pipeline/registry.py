"""Registered models in MLflow: log a folder as a pyfunc model, register a version, point an alias at it."""
from __future__ import annotations

from pathlib import Path

import mlflow


def register_folder(folder: str | Path, python_model: mlflow.pyfunc.PythonModel, name: str, alias: str) -> str:
    """Log ``folder`` (as the artifact ``bundle``) with ``python_model`` in the active run, register it as
    ``name`` and point ``alias`` at the new version; returns ``models:/name@alias``."""
    info = mlflow.pyfunc.log_model(name="filter", python_model=python_model, artifacts={"bundle": str(folder)},
                                   pip_requirements=["conceptlens"], registered_model_name=name)
    mlflow.MlflowClient().set_registered_model_alias(name, alias, info.registered_model_version)
    return f"models:/{name}@{alias}"
