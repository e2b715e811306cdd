"""The HTML report in a real browser: headless Chromium (Debian's ``chromium``, driven by Playwright) opens the
demo's report at a desktop and a phone width and finds no console or page error, no failed or network request,
every image loaded and every figure shown, every section of the run present and in the table of contents, no
page wider than a phone, and a heatmap cell that tells its numbers on hover and on a tap. Full-page
screenshots are saved in ``$CONCEPTLENS_TEST_ARTIFACTS`` (default ``test-artifacts/``).

The checks themselves are first run on small pages broken on purpose, so a check that stops seeing its problem
fails. Everything skips, saying why, only when no browser or no Playwright is installed here.
"""
from __future__ import annotations

import base64
import io
import json
import os
import re
from pathlib import Path

import pytest
from pagecheck import DESKTOP, PHONE, Browser, unavailable  # tests/pagecheck.py (tests/ is on sys.path: conftest)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module."""
    why = unavailable()
    if why:
        pytest.skip(f"no browser for the report's browser test: {why}")
    with Browser() as b:
        yield b


@pytest.fixture(scope="module")
def artifacts() -> Path:
    folder = Path(os.environ.get("CONCEPTLENS_TEST_ARTIFACTS") or REPO / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def png_uri() -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 6), (200, 40, 40)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def page(tmp_path: Path, extra: str = "", meta: bool = True) -> Path:
    """A small page shaped like the report (viewport meta, toc, two sections, an image, an svg figure), plus
    ``extra`` HTML at the end of the body."""
    viewport = '<meta name="viewport" content="width=device-width, initial-scale=1">' if meta else ""
    html = f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
{viewport}<link rel="icon" href="data:,">
<style>img, svg {{max-width: 100%; height: auto}} .scroll {{overflow-x: auto}}</style><title>t</title></head>
<body><nav id="toc"><a href="#one">One</a><a href="#two">Two</a></nav>
<section id="one" class="cl-section"><h2>One</h2><img src="{png_uri()}" width="80" alt="x"></section>
<section id="two" class="cl-section"><h2>Two</h2><svg class="figure" viewBox="0 0 100 50" width="100" height="50">
<rect width="100" height="50" fill="#369"/></svg>
<div class="scroll"><table><tr><td style="min-width: 2000px">a wide table, scrolled in its box</td></tr></table></div>
</section>{extra}</body></html>"""
    path = tmp_path / "page.html"
    path.write_text(html)
    return path


@pytest.mark.parametrize("width", [DESKTOP[0], PHONE[0]])
def test_a_sound_page_passes(browser, tmp_path, width):
    view = browser.open(page(tmp_path), width, 800)
    assert view.problems(sections=["one", "two"]) == []
    assert len(view.measured["images"]) == 1 and len(view.measured["figures"]) == 1
    view.close()


@pytest.mark.parametrize("extra, sections, width, expected", [
    ('<img src="missing.png" alt="gone">', [], 1280, ["image not loaded: img src='missing.png'",
                                                     "console error: Failed to load resource"]),
    ("<script>undefinedFunction()</script>", [], 1280, ["page error: undefinedFunction is not defined"]),
    ('<script>console.error("boom")</script>', [], 1280, ["console error: boom"]),
    ('<div id="wide" style="width: 900px">wide</div>', [], 390, ["page wider than the 390 px viewport",
                                                                 "div#wide"]),
    ('<img src="http://example.invalid/x.png" alt="net">', [], 1280, ["a network request"]),
    ('<svg class="figure" style="display:none"></svg>', [], 1280, ["figure not shown: svg.figure"]),
    ('<img style="visibility:hidden" src="' + png_uri() + '">', [], 1280, ["image not shown: img"]),
    ("", ["three"], 1280, ["section missing from the page: #three", "section not linked from nav#toc: #three"]),
    ('<section id="three"></section>', ["three"], 1280, ["section not linked from nav#toc: #three"]),
], ids=["missing-image", "js-error", "console-error", "overflow", "network", "hidden-figure", "hidden-image",
        "missing-section", "unlinked-section"])
def test_the_checks_see_a_broken_page(browser, tmp_path, extra, sections, width, expected):
    view = browser.open(page(tmp_path, extra), width, 800)
    problems = view.problems(sections=["one", "two", *sections])
    view.close()
    for text in expected:
        assert any(text in p for p in problems), f"{text!r} not among {problems}"


def test_a_page_without_a_viewport_meta_is_too_wide_for_a_phone(browser, tmp_path):
    """A phone lays such a page out 980 px wide and shrinks it: unreadable, and seen as wider than the phone."""
    view = browser.open(page(tmp_path, meta=False), *PHONE)
    problems = view.problems(sections=["one", "two"])
    view.close()
    assert any("page wider than the 390 px viewport" in p for p in problems), problems


@pytest.fixture(scope="module")
def report(demo_done, demo_run):
    """The demo's report page and the section ids its metrics.json lists."""
    assert demo_done[0] == 0, demo_done[1][-3000:]
    folder = demo_run / "demo" / "report"
    sections = json.loads((folder / "metrics.json").read_text())["sections"]
    assert sections, "the report lists no section"
    return folder / "index.html", sections


@pytest.mark.slow
@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_the_report_reads_well_in_a_browser(browser, report, artifacts, viewport, capsys):
    path, sections = report
    view = browser.open(path, *viewport)
    shot = view.screenshot(artifacts / f"report-{viewport[0]}x{viewport[1]}.png")
    with capsys.disabled():
        print(f"\nscreenshot: {shot}")
    problems = view.problems(sections=sections)
    view.close()
    assert problems == [], "\n".join(problems)
    shown = view.measured
    assert shown["images"] or shown["figures"], "the report shows no figure at all"
    assert [s for s in shown["toc"] if s in sections] == sections, "nav#toc lists the sections out of order"


@pytest.mark.slow
def test_a_heatmap_cell_tells_its_numbers_on_hover_and_on_a_tap(browser, report):
    """A significant cell's title carries class × concept, the value with its 95 % interval and q; hovering it
    writes that into its table's readout line; a click (a phone's tap) pins it in a tooltip box."""
    path, _ = report
    for width, height in (DESKTOP, PHONE):
        view = browser.open(path, width, height)
        cells = view.page.locator("table.heat td.cell.sig:visible")
        assert cells.count() > 0, "no significant heatmap cell in sight"
        cell = cells.first
        title = cell.get_attribute("title")
        assert re.search(r" × .+\n.*: ×?-?\d[\d.e+-]* \(95% interval ×?-?\d[\d.e+-]* to ×?-?\d[\d.e+-]*\)", title) \
            and re.search(r"\nq = \d[\d.e+-]*", title), title
        readout = view.page.locator("#" + cell.evaluate("el => el.closest('table').id") + "-readout")
        if width == DESKTOP[0]:
            cell.hover()
            assert readout.text_content() == title.replace("\n", "; ")
        cell.tap() if width == PHONE[0] else cell.click()
        tip = view.page.locator("#cl-tip")
        assert tip.is_visible() and tip.text_content() == title
        box, cell_box = tip.bounding_box(), cell.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= width + 1, f"the tooltip leaves the screen: {box}"
        assert abs(box["y"] - (cell_box["y"] + cell_box["height"] / 2)) < 60, "the tooltip is far from the cell"
        view.page.keyboard.press("Escape")
        assert not tip.is_visible()
        assert view.console_errors == view.page_errors == [], view.console_errors + view.page_errors
        view.close()
