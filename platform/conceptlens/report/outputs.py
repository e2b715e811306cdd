"""Reading a run folder's outputs for the page: small helpers shared by the sections."""
from __future__ import annotations

import json
import math
from pathlib import Path


def read_json(path: Path) -> dict | None:
    """The JSON file at ``path``, None when it is missing."""
    return json.loads(path.read_text()) if path.is_file() else None


def finite(value) -> float | None:
    """``value`` as a float, None when it is None, NaN or infinite."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def capped(items: list, limit: int) -> tuple[list, str | None]:
    """The first ``limit`` items, and ``"first N of M"`` when some were left out (else None)."""
    items = list(items)
    return (items[:limit], f"first {limit} of {len(items)}") if len(items) > limit else (items, None)
