"""One self-contained HTML page: Jinja2 templates shipped in the package (``conceptlens/report/templates``),
images inlined as base64 data URIs, no external resource of any kind, so the page opens offline."""
from __future__ import annotations

import base64
import math
from functools import lru_cache
from pathlib import Path

from jinja2 import Environment, PackageLoader


def num(value, digits: int = 3) -> str:
    """``value`` with ``digits`` significant decimals (``0.1235``, ``12.3``, ``1.23e+05``); "–" for None/NaN."""
    if value is None or isinstance(value, str):
        return "–" if value is None else value
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(value):
        return "–" if math.isnan(value) else ("∞" if value > 0 else "−∞")
    if value == int(value) and abs(value) < 1e6:
        return str(int(value))
    return f"{value:.{digits}g}"


def pct(value, digits: int = 1) -> str:
    """A share in [0, 1] as a percentage (``0.1234`` → ``12.3%``); "–" for None/NaN."""
    if value is None:
        return "–"
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "–" if not math.isfinite(value) else f"{100 * value:.{digits}f}%"


@lru_cache(maxsize=1)
def environment() -> Environment:
    """The package's Jinja2 environment: HTML autoescaped, ``num`` and ``pct`` filters."""
    env = Environment(loader=PackageLoader("conceptlens.report"), autoescape=True, trim_blocks=True,
                      lstrip_blocks=True)
    env.filters["num"] = num
    env.filters["pct"] = pct
    return env


def render(template: str, **context) -> str:
    """Render the package template ``template`` (e.g. ``"report.html.j2"``) with ``context``."""
    return environment().get_template(template).render(**context)


def data_uri(image: str | Path | bytes, mime: str = "image/png") -> str:
    """``data:<mime>;base64,...`` of an image file (its path) or of its bytes, to inline in ``<img src>``."""
    data = image if isinstance(image, (bytes, bytearray)) else Path(image).read_bytes()
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def write_page(html: str, path: str | Path) -> Path:
    """Write ``html`` to ``path`` (UTF-8; parent folders made); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return path
