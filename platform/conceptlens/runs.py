"""Run directories: ``<run.root>/<run.name>/<command>/`` with each command's outputs and ``metrics.json``."""
from __future__ import annotations

import json
import math
from pathlib import Path

from conceptlens.config import RunConfig


def command_dir(run: RunConfig, command: str) -> Path:
    path = Path(run.root) / run.name / command
    path.mkdir(parents=True, exist_ok=True)
    return path


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
