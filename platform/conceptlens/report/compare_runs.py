"""The two runs ``conceptlens compare`` is given, found in MLflow, and the outputs it compares, downloaded from
MLflow (never read from a run folder: the store may be a server on another machine).

A reference (:func:`resolve`) is a run name (the pipeline run tagged ``conceptlens.run=<name>``), an MLflow run id
(a pipeline run, or any run below one: a command or one of its parts), or a registered model version,
``models:/<name>/<version>`` or ``models:/<name>@<alias>``: a filter bundle (registered by ``monitor``) stands
for the pipeline of the run that registered it; a classifier (registered by ``neurons``, base and repaired
versions alike) for the pipeline run whose ``conceptlens.classifier_hash`` is that version's fingerprint —
the newest with a scorecard, else the newest.

:func:`fetch` takes each command's newest finished child run and downloads the files in :data:`WANTED`.
"""
from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from conceptlens.models.embedding import ModelSpec
from conceptlens.models.preprocess import DEFAULT
from conceptlens.models.registered import CARD, classifier_weights
from conceptlens.pipeline.registry import download, rebased
from conceptlens.pipeline.runs import log
from conceptlens.pipeline.tracking import COMMAND, PIPELINE, sqlite_file

# per command, the artifacts compared ({source}: compare.source)
# (embed's per-row predictions and evaluate's per-row filter scores: to pair the runs' rows, :mod:`.compare_paired`)
WANTED = {"evaluate": ("scorecard.json", "filter_scores.parquet"),
          "analyze": ("summary.json", "heatmaps_{source}.parquet"), "rootcause": ("cards.json",),
          "explain": ("summary.json",), "monitor": ("metrics.json",), "embed": ("predictions.parquet",)}
PARAMS = ("analyze.splits", "rootcause.splits", "explain.clusters", "data.source", "classifier.checkpoint")
RUN_ID = re.compile(r"[0-9a-f]{32}")
CLASSIFIER_HASH = "conceptlens.classifier_hash"


@dataclass
class RunRef:
    """A resolved reference: the pipeline run it stands for and how it was found."""
    ref: str
    name: str
    run_id: str
    experiment_id: str
    how: str
    tags: dict = field(default_factory=dict)


@dataclass
class RunOutputs:
    """The compared outputs of one run: ``children`` ``{command: {"run_id", "params"}}`` (newest finished child
    per command) and ``files`` ``{"<command>/<file>": local path}``."""
    ref: RunRef
    children: dict
    files: dict
    _read: dict = field(default_factory=dict, repr=False)

    def json(self, key: str) -> dict | None:
        """The JSON artifact ``key`` (read once), or None when the run did not log it."""
        if key not in self.files:
            return None
        if key not in self._read:
            self._read[key] = json.loads(self.files[key].read_text())
        return self._read[key]

    def parquet(self, key: str):
        import pyarrow.parquet as pq

        return pq.read_table(self.files[key]) if key in self.files else None


def client_for(uri: str):
    """An MLflow client of tracking (and registry) store ``uri``; FileNotFoundError for a sqlite file that does not
    exist (MLflow would create an empty store there)."""
    import mlflow

    db = sqlite_file(uri)
    if db is not None and not db.is_file():
        raise FileNotFoundError(f"no MLflow store at {db} (set run.root to the runs' root, or mlflow.tracking_uri)")
    return mlflow.MlflowClient(uri, registry_uri=uri)


def pipeline_runs(client, experiment: str) -> list:
    """Every pipeline run of the experiment named ``experiment``, oldest first."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ValueError(f"no experiment {experiment!r} in this MLflow store (mlflow.experiment)")
    return client.search_runs([found.experiment_id], f"tags.`conceptlens.kind` = '{PIPELINE}'",
                              order_by=["attributes.start_time ASC"], max_results=50000)


def _ref(run, ref: str, how: str) -> RunRef:
    tags = {k: v for k, v in run.data.tags.items() if k.startswith("conceptlens.")}
    return RunRef(ref, run.data.tags.get("conceptlens.run", run.info.run_name), run.info.run_id,
                  run.info.experiment_id, how, tags)


def pipeline_of(client, run_id: str, ref: str):
    """The pipeline run above run ``run_id`` (itself when it is one); ValueError when it belongs to none."""
    run = client.get_run(run_id)
    while run.data.tags.get("conceptlens.kind") != PIPELINE:
        parent = run.data.tags.get("mlflow.parentRunId")
        if not parent:
            raise ValueError(f"{ref}: MLflow run {run_id} belongs to no ConceptLens pipeline run")
        run = client.get_run(parent)
    return run


def _has_scorecard(run) -> bool:
    return any(k.startswith("evaluate.") for k in run.data.metrics)


def classifier_fingerprints(folder: Path, version) -> tuple[set[str], dict]:
    """The fingerprints (``conceptlens.classifier_hash``) a run using the registered classifier in ``folder`` carries,
    and the classifier's card: by the weights' content, and by the ``sha256`` tag of the version (the base version
    is registered as a copy of the checkpoint the runs read, whose digest that tag keeps)."""
    weights = classifier_weights(folder)
    card = json.loads((weights.parent / CARD).read_text())

    def fingerprint(checkpoint: str) -> str:
        return ModelSpec(card["arch"], checkpoint, card["head"], int(card["num_classes"]), "", None,
                         classifier_preprocess=card.get("preprocess") or DEFAULT).fingerprint()[
            "classifier"]

    found = {fingerprint(str(weights))}
    if digest := version.tags.get("sha256"):
        # a checkpoint that is no file is fingerprinted as it is: "sha256:<digest>" is how a file of that content is
        found.add(fingerprint(f"sha256:{digest}"))
    return found, card


def _logged_model_name(client, version) -> str | None:
    source = str(version.source)
    if source.startswith("models:/m-"):
        try:
            return client.get_logged_model(source.rsplit("/", 1)[1]).name
        except Exception:  # an older store without logged models: decided by the files
            return None
    return None


def resolve_model(client, uri: str, ref: str, experiment: str) -> RunRef:
    """The pipeline run a registered version ``ref`` stands for (see the module docstring)."""
    from mlflow.store.artifact.utils.models import get_model_name_and_version

    try:
        found = get_model_name_and_version(client, ref)
    except Exception as err:  # MLflow raises its own types for an unknown name, version or alias
        raise ValueError(f"{ref}: {err}") from None
    if len(found) != 2:
        raise ValueError(f"{ref}: a logged model, not a registered version (use models:/<name>/<version> or @<alias>)")
    version = client.get_model_version(*found)
    kind = _logged_model_name(client, version)
    if kind != "classifier":
        folder = download(ref, uri) if kind is None else None
        if folder is None or not list(folder.rglob("classifier.pt")):
            run = pipeline_of(client, version.run_id, ref)
            return _ref(run, ref, f"{ref} (version {version.version}) was registered by run '{run.info.run_name}'")
    fingerprints, card = classifier_fingerprints(download(ref, uri), version)
    runs = [r for r in pipeline_runs(client, experiment) if r.data.tags.get(CLASSIFIER_HASH) in fingerprints]
    if not runs:
        order = f" data.classes=[{','.join(card['classes'])}]" if card.get("classes") else ""
        raise ValueError(
            f"{ref}: no run used this classifier (version {version.version}, fingerprint "
            f"{' or '.join(sorted(fingerprints))}); make one, e.g. `conceptlens embed run.name=repaired "
            f"classifier.checkpoint={ref} data.source=<run.root>/demo/world/manifest.parquet{order}` (the "
            f"classifier's class order), then `conceptlens analyze run.name=repaired` and `conceptlens evaluate "
            f"run.name=repaired`")
    chosen = max(runs, key=lambda r: (_has_scorecard(r), r.info.end_time or r.info.start_time or 0))
    others = [r.data.tags.get("conceptlens.run") for r in runs if r is not chosen]
    also = f"; also used by {', '.join(others)} (name one to choose it)" if others else ""
    return _ref(chosen, ref, f"{ref} (version {version.version}, classifier "
                             f"{chosen.data.tags[CLASSIFIER_HASH]}): run '{chosen.data.tags.get('conceptlens.run')}'"
                             f"{' (newest with a scorecard)' if _has_scorecard(chosen) else ''}{also}")


def resolve(client, uri: str, ref: str, experiment: str) -> RunRef:
    """The pipeline run ``ref`` names: a run name, an MLflow run id or a registered version; ValueError listing the
    known run names when it is none of them."""
    if ref.startswith("models:/"):
        return resolve_model(client, uri, ref, experiment)
    runs = pipeline_runs(client, experiment)
    named = [r for r in runs if r.data.tags.get("conceptlens.run") == ref]
    if named:
        return _ref(named[0], ref, f"run name '{ref}'")
    if RUN_ID.fullmatch(ref):
        try:
            run = client.get_run(ref)
        except Exception:  # not an id in this store: reported with the known names below
            run = None
        if run is not None:
            pipeline = pipeline_of(client, ref, ref)
            what = "its pipeline run" if pipeline.info.run_id == ref else f"run '{run.info.run_name}'"
            return _ref(pipeline, ref, f"MLflow run id {ref} ({what})")
    known = sorted({r.data.tags.get("conceptlens.run", "?") for r in runs})
    raise ValueError(f"unknown run {ref!r}: known runs are {', '.join(known) or 'none'} (or give an MLflow run "
                     f"id, or models:/<name>/<version> or models:/<name>@<alias>)")


def newest_children(client, ref: RunRef) -> dict:
    """``{command: {"run_id", "params"}}``: the newest finished child run of each command of the pipeline run."""
    runs = client.search_runs([ref.experiment_id], f"tags.`mlflow.parentRunId` = '{ref.run_id}'",
                              order_by=["attributes.start_time DESC"], max_results=50000)
    out = {}
    for run in runs:
        command = run.data.tags.get("conceptlens.command")
        if run.data.tags.get("conceptlens.kind") == COMMAND and run.info.status == "FINISHED" and command not in out:
            out[command] = {"run_id": run.info.run_id,
                            "params": {k: run.data.params.get(k) for k in PARAMS if k in run.data.params}}
    return out


def _download(client, uri: str, run_id: str, path: str, dst: Path) -> Path:
    """A local copy of artifact ``path`` of ``run_id``: the file itself in a local store (also one copied
    elsewhere), else downloaded under ``dst``."""
    import mlflow

    location = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{path}"
    local = rebased(location, uri)
    if local is not None:
        return local
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=str(dst), tracking_uri=uri))


def fetch(client, uri: str, ref: RunRef, source: str, dst: Path | None = None) -> RunOutputs:
    """The outputs of ``ref`` that ``compare`` reads (:data:`WANTED`), with a progress line per file."""
    dst = Path(dst or tempfile.mkdtemp(prefix="conceptlens-compare-"))
    children = newest_children(client, ref)
    wanted = [(command, name.format(source=source)) for command, names in WANTED.items() if command in children
              for name in names]
    log(f"compare: run '{ref.name}' ({ref.run_id[:8]}): commands {', '.join(sorted(children)) or 'none'}; "
        f"downloading {len(wanted)} files")
    files = {}
    for k, (command, name) in enumerate(wanted, 1):
        run_id = children[command]["run_id"]
        present = {Path(a.path).name for a in client.list_artifacts(run_id)}
        if name not in present:
            log(f"compare: run '{ref.name}': {command}/{name} was not logged ({k}/{len(wanted)})")
            continue
        path = _download(client, uri, run_id, name, dst / ref.run_id / command)
        files[f"{command}/{name}"] = path
        log(f"compare: run '{ref.name}': {command}/{name} ({k}/{len(wanted)}, {path.stat().st_size / 1024:.0f} kB)")
    return RunOutputs(ref, children, files)
