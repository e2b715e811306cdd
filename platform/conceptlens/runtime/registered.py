"""The filter bundle as an MLflow pyfunc model, and loading it back from a folder or the registry."""
from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd

from conceptlens.runtime.filter import ConceptFilter


class FilterPyfunc(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: ``predict`` takes rows with ``prediction``, ``logits``, ``features`` and
    ``vlm_embedding`` (lists) and returns ``verdict`` and both scores."""

    def load_context(self, context) -> None:
        self.filter = ConceptFilter.load(context.artifacts["bundle"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        batch = {k: np.asarray(model_input[k].tolist()) for k in ("prediction", "logits", "features", "vlm_embedding")}
        return pd.DataFrame(self.filter.verdicts(batch))


def load_bundle(uri: str) -> ConceptFilter:
    """A filter from a bundle folder or a registry URI such as ``models:/conceptlens-filter@champion``."""
    if not uri.startswith(("models:/", "runs:/")):
        return ConceptFilter.load(uri)
    return mlflow.pyfunc.load_model(uri).unwrap_python_model().filter
