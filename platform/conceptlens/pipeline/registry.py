"""Registered models in MLflow: log a folder as a pyfunc model, register a version, point an alias at it;
and find a registered model's files again, also in a store that was copied to another place.

A sqlite store records absolute ``file://`` artifact locations. Copied elsewhere (``mlflow.db`` and
``mlartifacts`` together), those locations no longer exist; :func:`download` then reads the same
relative path under the ``mlartifacts`` folder beside the database in use.
"""
from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlparse

import mlflow

from conceptlens.pipeline.runs import REGISTRY_SCHEMES
from conceptlens.pipeline.tracking import artifact_folder, sqlite_file


def model_name(template: str, run: str) -> str:
    """A registered model's name from its config template: ``{run}`` becomes the run's name, so that one run's
    registrations never move another run's aliases (``conceptlens-{run}-filter`` -> ``conceptlens-demo-filter``)."""
    try:
        name = template.format(run=run)
    except (KeyError, IndexError, ValueError) as err:
        raise ValueError(f"registered model name {template!r}: only {{run}} may be filled in ({err})") from None
    if not re.fullmatch(r"[\w.\-]+", name):
        raise ValueError(f"registered model name {name!r} (from {template!r}): use letters, digits, '.', '-', '_'")
    return name


def is_registry_uri(uri: str) -> bool:
    return str(uri).startswith(REGISTRY_SCHEMES)


def register_folder(folder: str | Path, python_model: mlflow.pyfunc.PythonModel, name: str, alias: str,
                    tags: dict[str, str] | None = None, model: str = "filter") -> str:
    """Log ``folder`` (as the artifact ``bundle`` of the logged model ``model``) with ``python_model`` in the
    active run, register it as ``name`` with ``tags`` on the new version and point ``alias`` at it; returns
    ``models:/name@alias``."""
    info = mlflow.pyfunc.log_model(name=model, python_model=python_model, artifacts={"bundle": str(folder)},
                                   pip_requirements=["conceptlens"], registered_model_name=name)
    client = mlflow.MlflowClient()
    for key, value in (tags or {}).items():
        client.set_model_version_tag(name, info.registered_model_version, key, value)
    client.set_registered_model_alias(name, alias, info.registered_model_version)
    return f"models:/{name}@{alias}"


def find_version(name: str, tag: str, value: str) -> str | None:
    """``models:/name/<version>`` of the newest version of ``name`` tagged ``tag=value``, or None (also when
    ``name`` is not registered)."""
    client = mlflow.MlflowClient()
    versions = [v for v in client.search_model_versions(f"name = '{name}'") if v.tags.get(tag) == value]
    if not versions:
        return None
    return f"models:/{name}/{max(int(v.version) for v in versions)}"


def artifact_location(uri: str, tracking_uri: str) -> str:
    """Where the store says the files of ``models:/name@alias``, ``models:/name/version``,
    ``models:/m-<id>`` or ``runs:/<run_id>/path`` are."""
    from mlflow.store.artifact.utils.models import get_model_name_and_version

    db = sqlite_file(tracking_uri)
    if db is not None and not db.is_file():  # MLflow would create an empty store here
        raise FileNotFoundError(f"no MLflow store at {db}")
    client = mlflow.MlflowClient(tracking_uri, registry_uri=tracking_uri)
    if uri.startswith("runs:/"):
        run_id, _, path = uri[len("runs:/"):].partition("/")
        base = client.get_run(run_id).info.artifact_uri
        return f"{base.rstrip('/')}/{path}" if path else base
    found = get_model_name_and_version(client, uri)
    if len(found) == 1:  # a logged model, models:/m-<id>
        return client.get_logged_model(found[0]).artifact_location
    return client.get_model_version_download_uri(*found)


def rebased(location: str, tracking_uri: str) -> Path | None:
    """A local ``location`` that exists as it is, or the same path below ``mlartifacts`` found under the
    ``mlartifacts`` folder beside the sqlite file of ``tracking_uri``; None for remote locations."""
    parsed = urlparse(location)
    if parsed.scheme not in ("", "file"):
        return None
    path = Path(unquote(parsed.path))
    if path.exists():
        return path
    here = artifact_folder(tracking_uri)
    if here is None or "mlartifacts" not in path.parts:
        raise FileNotFoundError(f"the store {tracking_uri} keeps these files at {path}, which does not exist here")
    tail = path.parts[len(path.parts) - path.parts[::-1].index("mlartifacts"):]
    moved = here.joinpath(*tail)
    if not moved.exists():
        raise FileNotFoundError(f"the store {tracking_uri} keeps these files at {path}; neither that nor {moved} "
                                f"exists: copy the store's mlartifacts folder beside its database file")
    return moved


def download(uri: str, tracking_uri: str) -> Path:
    """A local folder with the files of registry ``uri`` (see :func:`artifact_location`): the folder itself
    for a local store, also one copied elsewhere (:func:`rebased`); a download from a server."""
    location = artifact_location(uri, tracking_uri)
    local = rebased(location, tracking_uri)
    if local is not None:
        return local
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=location, tracking_uri=tracking_uri))
