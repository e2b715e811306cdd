"""Images for the page: read, downscale when large, re-encode as PNG and inline as a data URI, so the page
stays one file of a reasonable size."""
from __future__ import annotations

import io
from pathlib import Path

from conceptlens.report.page import data_uri

MAX_SIDE = 1000  # px: a figure wider than the page is downscaled to this


def image_uri(path: str | Path, *, max_side: int = MAX_SIDE, photo: bool = False) -> str | None:
    """A data URI of the image at ``path``, downscaled (Lanczos) so that its longer side is at most ``max_side``
    px: PNG, or JPEG (quality 85, far smaller) for ``photo``-like content such as image montages; None when the
    file is missing or not an image."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            image = img.convert("RGBA" if img.mode in ("RGBA", "LA", "P") and not photo else "RGB")
    except (OSError, ValueError):
        return None
    if not photo and max(image.size) <= max_side and Path(path).suffix.lower() == ".png":
        return data_uri(path)  # already a PNG of the right size: its own bytes are the smallest
    if max(image.size) > max_side:
        scale = max_side / max(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.LANCZOS)
    buffer = io.BytesIO()
    if photo:
        image.save(buffer, format="JPEG", quality=85, optimize=True)
        return data_uri(buffer.getvalue(), "image/jpeg")
    image.save(buffer, format="PNG", optimize=True)
    return data_uri(buffer.getvalue())


def image_size(path: str | Path) -> tuple[int, int] | None:
    """``(width, height)`` of an image file, None when unreadable."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.size
    except (OSError, ValueError):
        return None
