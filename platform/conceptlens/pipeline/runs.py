"""Run directories: ``<run.root>/<run.name>/<command>/`` with each command's outputs and ``metrics.json``,
and the models a run uses."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

from conceptlens.config import Config, RunConfig
from conceptlens.models.embedding import ModelSpec


def command_dir(run: RunConfig, command: str) -> Path:
    path = Path(run.root) / run.name / command
    path.mkdir(parents=True, exist_ok=True)
    return path


def world_dir(cfg: Config) -> Path:
    return Path(cfg.run.root) / cfg.run.name / "world"


def model_spec(cfg: Config) -> ModelSpec:
    """The models of a run: from config, else the ones `conceptlens world` trained for this run."""
    classifier, vlm = cfg.classifier.checkpoint, cfg.vlm.pretrained
    models = world_dir(cfg) / "models.json"
    if (classifier is None or vlm is None) and models.is_file():
        trained = json.loads(models.read_text())
        classifier, vlm = classifier or trained["classifier"], vlm or trained["vlm"]
    if classifier is None and cfg.classifier.weights is None:
        raise ValueError(f"no classifier: set classifier.checkpoint (or classifier.weights), "
                         f"or run `conceptlens world` for run '{cfg.run.name}' first")
    return ModelSpec(cfg.classifier.arch, classifier, cfg.classifier.head, cfg.classifier.num_classes,
                     cfg.vlm.arch, vlm, cfg.vlm.model_config, cfg.classifier.weights)


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
    """Periodic ``done/total rows (rate)`` lines: at most one every ``every`` seconds, and one at the end."""

    def __init__(self, what: str, total: int | None = None, every: float = 10.0):
        self.what, self.total, self.every = what, total, every
        self.done, self.start, self.last = 0, time.time(), time.time()

    @property
    def rate(self) -> float:
        return self.done / max(time.time() - self.start, 1e-9)

    def update(self, rows: int) -> None:
        self.done += rows
        finished = self.total is not None and self.done >= self.total
        if finished or time.time() - self.last >= self.every:
            self.last = time.time()
            of = f"/{self.total}" if self.total is not None else ""
            log(f"{self.what}: {self.done}{of} rows ({self.rate:.0f} rows/s)")
