"""The filter bundle in the MLflow model registry: register a version with an alias, load it back.

The bundle is logged as an MLflow pyfunc model (:class:`FilterModel`) whose artifact is the
bundle folder, so ``models:/<name>@<alias>`` resolves to it in any MLflow store.
"""
from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from conceptlens.runtime_filter import ConceptFilter


class FilterModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: ``predict`` takes rows with ``prediction``, ``logits``, ``features`` and
    ``vlm_embedding`` (lists) and returns ``verdict`` and both scores."""

    def load_context(self, context) -> None:
        self.filter = ConceptFilter.load(context.artifacts["bundle"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        batch = {k: np.asarray(model_input[k].tolist()) for k in ("prediction", "logits", "features", "vlm_embedding")}
        return pd.DataFrame(self.filter.verdicts(batch))


def register_bundle(folder: str | Path, name: str, alias: str) -> str:
    """Log ``folder`` as a pyfunc model in the active run, register it as ``name`` and point ``alias`` at the
    new version; returns ``models:/name@alias``."""
    info = mlflow.pyfunc.log_model(name="filter", python_model=FilterModel(), artifacts={"bundle": str(folder)},
                                   pip_requirements=["conceptlens"], registered_model_name=name)
    version = info.registered_model_version
    mlflow.MlflowClient().set_registered_model_alias(name, alias, version)
    return f"models:/{name}@{alias}"


def load_bundle(uri: str) -> ConceptFilter:
    """A filter from a bundle folder or a registry URI such as ``models:/conceptlens-filter@champion``."""
    if not uri.startswith(("models:/", "runs:/")):
        return ConceptFilter.load(uri)
    model = mlflow.pyfunc.load_model(uri)
    return model.unwrap_python_model().filter
