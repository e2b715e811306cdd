"""The filter bundle as an MLflow pyfunc model, and finding or loading it back from a folder or the registry."""
from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from conceptlens.pipeline.registry import download, is_registry_uri
from conceptlens.runtime.failure_modes import FailureModes
from conceptlens.runtime.filter import ConceptFilter


class FilterPyfunc(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: ``predict`` takes rows with ``prediction``, ``logits``, ``features`` and, unless the
    filter's ``concepts_from`` is aligned, ``vlm_embedding`` (lists) and returns ``verdict`` and both scores, and, when the bundle carries failure
    modes, the nearest one per row (``cluster``, -1 = none for the label; ``distance`` in radii;
    ``close_enough``)."""

    def load_context(self, context) -> None:
        self.filter = ConceptFilter.load(context.artifacts["bundle"])
        self.modes = FailureModes.load_optional(context.artifacts["bundle"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        columns = ("prediction", "logits", "features") + (("vlm_embedding",) if self.filter.needs_vlm else ())
        batch = {k: np.asarray(model_input[k].tolist()) for k in columns}
        return pd.DataFrame(self.filter.verdicts(batch) | (self.modes.nearest(batch) if self.modes else {}))


def fetch_bundle(uri: str, tracking_uri: str | None = None) -> Path:
    """The bundle folder (with ``filter.json``): ``uri`` itself, or the files of a registered model such as
    ``models:/conceptlens-demo-filter@champion`` in the store ``tracking_uri`` (default: MLflow's current one),
    read in place for a local store, also one copied elsewhere, downloaded from a server."""
    if not is_registry_uri(uri):
        return Path(uri)
    found = sorted(download(uri, tracking_uri or mlflow.get_tracking_uri()).rglob("filter.json"))
    if not found:
        raise FileNotFoundError(f"{uri} holds no filter bundle (filter.json)")
    return found[0].parent


def load_bundle(uri: str, tracking_uri: str | None = None) -> ConceptFilter:
    """The filter of a bundle folder or a registry URI (see :func:`fetch_bundle`)."""
    return ConceptFilter.load(fetch_bundle(uri, tracking_uri))
