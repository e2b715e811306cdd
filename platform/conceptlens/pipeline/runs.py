"""Run directories: ``<run.root>/<run.name>/<command>/`` with each command's outputs and ``metrics.json``,
and the models a run uses."""
from __future__ import annotations

import copy
import json
import math
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from conceptlens.config import Config, RunConfig
from conceptlens.models.embedding import ModelSpec
from conceptlens.models.preprocess import DEFAULT

REGISTRY_SCHEMES = ("models:/", "runs:/")  # registered models (pipeline.registry reads them)

EMBED_RECORD = "inputs.json"  # in the embed folder: the models and data the embeddings were made from
RECORDED_KEYS = ("classifier.arch", "classifier.weights", "classifier.checkpoint", "classifier.head",
                 "classifier.num_classes", "classifier.preprocess", "vlm.arch", "vlm.pretrained", "vlm.model_config",
                 "vlm.preprocess",
                 "data.source", "data.image_size", "data.classes", "data.splits", "data.calib_share")
SPLIT_RULE = ("rows without a split: sha256(id) -> u in [0, 1) from its first 8 bytes; "
              "u < data.calib_share ({share:g}) -> calib, else test")


def command_dir(run: RunConfig, command: str) -> Path:
    path = Path(run.root) / run.name / command
    path.mkdir(parents=True, exist_ok=True)
    return path


def world_dir(cfg: Config) -> Path:
    return Path(cfg.run.root) / cfg.run.name / "world"


def analyze_dir(cfg: Config) -> Path:
    """Where this run's ``analyze`` outputs are (its concepts and trust check), whether or not it has run."""
    return Path(cfg.run.root) / cfg.run.name / "analyze"


def model_spec(cfg: Config) -> ModelSpec:
    """The models of a run: from config, else the ones `conceptlens world` trained for this run. A classifier
    checkpoint may be a registered version (``models:/conceptlens-demo-classifier@repaired``): its weights file, and
    the preprocessing its card states unless ``classifier.preprocess`` says otherwise."""
    classifier, vlm, preprocess = cfg.classifier.checkpoint, cfg.vlm.pretrained, cfg.classifier.preprocess
    if classifier and classifier.startswith(REGISTRY_SCHEMES):
        classifier = registered_classifier(cfg, classifier)
        card = json.loads((Path(classifier).parent / "classifier.json").read_text())
        preprocess = card.get("preprocess") or preprocess if preprocess == DEFAULT else preprocess
    models = world_dir(cfg) / "models.json"
    if (classifier is None or vlm is None) and models.is_file():
        trained = json.loads(models.read_text())
        classifier, vlm = classifier or trained["classifier"], vlm or trained["vlm"]
    if classifier is None and cfg.classifier.weights is None and ":" not in cfg.classifier.arch:  # a factory may load its own
        raise ValueError(f"no classifier: set classifier.checkpoint (or classifier.weights), "
                         f"or run `conceptlens world` for run '{cfg.run.name}' first")
    return ModelSpec(cfg.classifier.arch, classifier, cfg.classifier.head, cfg.classifier.num_classes,
                     cfg.vlm.arch, vlm, cfg.vlm.model_config, cfg.classifier.weights, preprocess, cfg.vlm.preprocess)


def registered_classifier(cfg: Config, uri: str) -> str:
    """The weights file of the registered classifier ``uri`` in this run's MLflow store."""
    from conceptlens.models.registered import classifier_weights
    from conceptlens.pipeline.registry import download
    from conceptlens.pipeline.tracking import tracking_uri

    try:
        return str(classifier_weights(download(uri, tracking_uri(cfg))))
    except Exception as err:  # MLflow raises its own types for an unknown name, version or alias
        raise ValueError(f"classifier.checkpoint={uri}: {err}") from None


def embed_folder(cfg: Config) -> Path:
    """The embed folder whose table this run reads: ``analyze.embeddings``' parent when set, else ``<run>/embed``."""
    if cfg.analyze.embeddings:
        return Path(cfg.analyze.embeddings).parent
    return Path(cfg.run.root) / cfg.run.name / "embed"


def embeddings_table(cfg: Config, override: str | None, key: str) -> Path:
    """The embeddings table a command reads: ``override`` (the command's ``<key>``) when set, else this run's
    ``embed`` output; FileNotFoundError saying what to do when it holds no Parquet file."""
    path = Path(override) if override else embed_folder(cfg) / "embeddings"
    if not any(path.glob("*.parquet")):
        raise FileNotFoundError(f"no embeddings table at {path}; run `conceptlens embed` first or set {key}=FOLDER")
    return path


def record_inputs(folder: Path, cfg: Config, spec: ModelSpec, source: str | Path, classes: Sequence[str]) -> Path:
    """Write ``<folder>/inputs.json``: the models (``spec``), the data ``source`` read and its ``classes``
    (the order behind ``label_index``), and the data settings of ``cfg``, as config keys."""
    inputs = {key: _get(cfg, key) for key in RECORDED_KEYS} | {
        "classifier.arch": spec.classifier_arch, "classifier.weights": spec.classifier_weights,
        "classifier.checkpoint": _absolute(spec.classifier_checkpoint), "classifier.head": spec.classifier_head,
        "classifier.num_classes": spec.num_classes, "vlm.arch": spec.vlm_arch,
        "vlm.pretrained": _absolute(spec.vlm_pretrained), "vlm.model_config": _absolute(spec.vlm_model_config),
        "data.source": _absolute(str(source)), "data.classes": list(classes)}
    path = Path(folder) / EMBED_RECORD
    path.write_text(json.dumps({"inputs": inputs, "split_rule": SPLIT_RULE.format(share=cfg.data.calib_share)},
                               indent=2))
    return path


def run_inputs(cfg: Config) -> Config:
    """``cfg`` with the models and data its embeddings were made from (``<embed folder>/inputs.json``), so
    the commands after ``embed`` need them only once. A key left at its default takes the recorded
    value; a key set to another value is an error naming both (the embeddings would not match). Without a
    record (runs made before it existed), ``cfg`` as it is: models from config or the run's world."""
    path = embed_folder(cfg) / EMBED_RECORD
    if not path.is_file():
        return cfg
    recorded, defaults, out = json.loads(path.read_text())["inputs"], Config(), copy.deepcopy(cfg)
    for key, value in ((k, recorded[k]) for k in RECORDED_KEYS if k in recorded):
        current = _get(cfg, key)
        if not _same(current, value) and not _same(current, _get(defaults, key)):
            raise ValueError(f"{key}={current} but run '{cfg.run.name}' was embedded with {value} ({path}): "
                             f"leave {key} out to use the run's, or embed again under another run.name")
        _set(out, key, value)
    filled = [key for key in RECORDED_KEYS if _get(out, key) != _get(cfg, key)]
    if filled:
        log(f"models and data as embedded ({path}): {', '.join(filled)}")
    return out


def _get(cfg: Config, key: str) -> Any:
    section, name = key.split(".")
    value = getattr(getattr(cfg, section), name)
    return list(value) if isinstance(value, (list, tuple)) else value


def _set(cfg: Config, key: str, value: Any) -> None:
    section, name = key.split(".")
    setattr(getattr(cfg, section), name, value)


def _absolute(value: str | None) -> str | None:
    """An existing file or folder as an absolute path; anything else (a tag such as ``openai``) unchanged."""
    return str(Path(value).resolve()) if value and Path(value).exists() else value


def _same(a: Any, b: Any) -> bool:
    norm = (lambda v: _absolute(v) if isinstance(v, str) else v)
    return norm(a) == norm(b)


def _clean(value):
    """NaN and infinities become ``null``: metrics.json stays valid JSON for any reader."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def write_metrics(folder: Path, metrics: dict) -> Path:
    path = Path(folder) / "metrics.json"
    path.write_text(json.dumps(_clean(metrics), indent=2, sort_keys=True))
    return path


def read_metrics(folder: Path) -> dict:
    return json.loads((Path(folder) / "metrics.json").read_text())


def log(msg: str) -> None:
    """A timestamped console line: the jobs' progress channel."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Progress:
    """Periodic ``done/total <unit> (rate, time left)`` lines through ``log`` (default: :func:`log`): at most one
    every ``every`` seconds, one when ``total`` is reached, and one for each ``update(..., note=...)`` (an epoch's
    loss). As a context manager it also speaks while nothing is counted, from a background thread (work that
    reports only when a large piece is done: a Ray job's first batch, a deployment), and ends with the final
    line (:meth:`finish`). ``clock``: the time source in seconds (tests pass their own)."""

    def __init__(self, what: str, total: int | None = None, every: float = 10.0, unit: str = "rows",
                 log: Callable[[str], None] | None = None, clock: Callable[[], float] = time.time):
        self.what, self.total, self.every, self.unit, self.say, self.clock = what, total, every, unit, log, clock
        self.done, self.shown, self.start = 0, 0, clock()
        self.last = self.start
        self._lock, self._stop = threading.Lock(), threading.Event()

    @property
    def rate(self) -> float:
        return self.done / max(self.clock() - self.start, 1e-9)

    @property
    def left(self) -> float | None:
        """Seconds left at the rate so far; None while it cannot be told (no total, nothing done, or finished)."""
        if not self.total or not self.done or self.done >= self.total:
            return None
        return (self.total - self.done) / self.rate

    def update(self, rows: int = 0, note: str | None = None) -> None:
        """Count ``rows`` more; a line when ``every`` seconds passed since the last one, when ``total`` is reached
        (once), or when a ``note`` is given (it leads the line)."""
        with self._lock:
            self.done += rows
            reached = self.total is not None and self.done >= self.total and self.shown < self.done
            if reached or note is not None or self.clock() - self.last >= self.every:
                self._emit(note)

    def tick(self) -> None:
        """A line if none came for ``every`` seconds (the background thread's call)."""
        with self._lock:
            if self.clock() - self.last >= self.every:
                self._emit(None)

    def finish(self, note: str | None = None) -> None:
        """The final line, unless the last line already showed every count (or ``note`` asks for one)."""
        with self._lock:
            if self.done != self.shown or note is not None:
                self._emit(note)

    def line(self, note: str | None = None) -> str:
        """``<what>: [<note>; ]<done>[/<total>] <unit> (<rate> <unit>/s[, ~<time> left])``; before anything is
        counted, ``(<time> so far)`` after ``0/<total> <unit>``, or after ``<what>`` alone when there is no total."""
        lead = f"{note}; " if note else ""
        if not self.done:
            so_far = f"({_duration(self.clock() - self.start)} so far)"
            if self.total is None:
                return f"{self.what}{': ' + note if note else ''} {so_far}"
            return f"{self.what}: {lead}0/{self.total} {self.unit} {so_far}"
        rate, left = self.rate, self.left
        pace = f"{rate:.1f} {self.unit}/s" if rate >= 1 else f"{rate:.2g} {self.unit}/s"
        pace += f", ~{_duration(left)} left" if left is not None else ""
        of = f"/{self.total}" if self.total is not None else ""
        return f"{self.what}: {lead}{self.done}{of} {self.unit} ({pace})"

    def _emit(self, note: str | None) -> None:
        self.last, self.shown = self.clock(), self.done
        (self.say or log)(self.line(note))

    def __enter__(self) -> "Progress":
        def beat():
            while not self._stop.wait(min(self.every, 1.0)):
                self.tick()

        self._stop.clear()
        self._thread = threading.Thread(target=beat, name=f"progress: {self.what}", daemon=True)
        if self.every > 0:  # every=0 prints at each update already
            self._thread.start()
        return self

    def __exit__(self, kind, error, trace) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if kind is None:
            self.finish()


def _duration(seconds: float) -> str:
    """``42 s``, ``12 min``, ``2.5 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
