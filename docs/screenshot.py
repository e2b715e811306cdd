"""Render an HTML report to a PNG for the README, in headless Chromium (the browser test's code, tests/pagecheck.py).

    .venv/bin/python docs/screenshot.py runs/demo/report/index.html            # -> docs/report.png
    .venv/bin/python docs/screenshot.py REPORT.html --out x.png --width 390 --height 0   # a phone, whole page

The top ``--height`` CSS pixels at ``--width`` (0: the whole page). The PNG is reduced to a 256-colour palette
when it would be larger than ``--max-kb``. Exit 2 with one line when the page or the browser is missing, or
the page shows a problem (a console error, an image not loaded, ...).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from pagecheck import Browser, unavailable  # noqa: E402


def shrink(path: Path, max_bytes: int) -> int:
    """Re-save ``path`` with a 256-colour palette (Pillow) if larger than ``max_bytes``; returns its size."""
    if path.stat().st_size > max_bytes:
        from PIL import Image

        with Image.open(path) as image:
            small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
        small.save(path, optimize=True)
    return path.stat().st_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path, help="the report's index.html")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "report.png")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1800, help="CSS pixels from the top; 0 = the whole page")
    parser.add_argument("--max-kb", type=int, default=900)
    args = parser.parse_args(argv)
    if not args.page.is_file():
        print(f"error: no page at {args.page}", file=sys.stderr)
        return 2
    why = unavailable()
    if why:
        print(f"error: {why}", file=sys.stderr)
        return 2
    with Browser() as browser:
        view = browser.open(args.page, args.width, min(args.height or 900, 900))
        problems = view.problems()
        if problems:
            print(f"error: the page shows {len(problems)} problem(s), first: {problems[0]}", file=sys.stderr)
            return 2
        view.page.reload(wait_until="load")  # as a reader first sees it (problems() opened every <details>)
        view.screenshot(args.out, clip_height=args.height or None)
        view.close()
    size = shrink(args.out, args.max_kb * 1024)
    print(f"screenshot: {args.out} ({size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
