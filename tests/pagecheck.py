"""Open an HTML page in headless Chromium and check what a reader sees (shared by the browser test and
``docs/screenshot.py``; not part of the library).

Playwright drives Debian's ``chromium`` package (the system browser: no Playwright browser download).
``CONCEPTLENS_CHROMIUM`` names another Chromium binary. ``unavailable()`` says why no browser can run here,
so a test can skip with that message.

    with Browser() as browser:
        view = browser.open("report/index.html", width=390, height=844)
        view.problems(sections=["summary", ...])   # -> list[str], empty when the page is fine
        view.screenshot("out.png")
        view.close()
"""
from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

DESKTOP = (1280, 900)  # (width, height) in CSS pixels
PHONE = (390, 844)
CANDIDATES = ("chromium", "chromium-browser", "/usr/lib/chromium/chromium")


def chromium_path() -> str | None:
    """The Chromium binary to drive: ``$CONCEPTLENS_CHROMIUM``, else Debian's ``chromium`` on PATH; None if none."""
    wanted = os.environ.get("CONCEPTLENS_CHROMIUM")
    if wanted:
        return shutil.which(wanted) or (wanted if Path(wanted).is_file() else None)
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def unavailable() -> str | None:
    """Why no headless browser can run here (a message naming what to install), or None when one can."""
    if importlib.util.find_spec("playwright") is None:
        return "the Python package playwright is not installed (pip install -e '.[test]', or `make setup`)"
    if chromium_path() is None:
        where = os.environ.get("CONCEPTLENS_CHROMIUM")
        return (f"CONCEPTLENS_CHROMIUM={where} is not an executable" if where else
                "no Chromium here: `apt-get install chromium` (Debian's package; `make test` installs it as root)")
    return None


# What the page shows, measured in the page itself (one evaluate). Images are scrolled into view and decoded
# first, so lazy ones count; ``<details>`` are opened, as a reader would, so their figures are measured.
MEASURE = """async (width) => {
  document.querySelectorAll("details").forEach(d => { d.open = true; });
  const box = el => { const r = el.getBoundingClientRect(); return [r.width, r.height]; };
  const shown = el => { const s = getComputedStyle(el); return s.display !== "none" && s.visibility !== "hidden"
                        && s.opacity !== "0"; };
  const name = el => el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") +
                     (el.classList.length ? "." + [...el.classList].join(".") : "");
  const images = [];
  for (const img of document.images) {
    img.loading = "eager";
    img.scrollIntoView();
    await img.decode().catch(() => null);
    const [w, h] = box(img);
    images.push({what: name(img), src: (img.getAttribute("src") || "").slice(0, 60), complete: img.complete,
                 natural: img.naturalWidth, width: w, height: h, shown: shown(img)});
  }
  const figures = [...document.querySelectorAll("svg.figure")].map(svg => {
    const [w, h] = box(svg); return {what: name(svg), width: w, height: h, shown: shown(svg)}; });
  window.scrollTo(0, 0);
  // a phone (mobile emulation) widens innerWidth to fit wide content: measure against the device's width
  const inner = Math.min(window.innerWidth, width);
  // what sticks out to the right, outside any scrolling box (the culprits of a page wider than the screen)
  const clipped = el => { for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) {
      const o = getComputedStyle(p).overflowX; if (o === "auto" || o === "scroll" || o === "hidden") return true; }
    return false; };
  const wide = [...document.body.querySelectorAll("*")].filter(el =>
      el.getBoundingClientRect().right > inner + 1 && !clipped(el)).slice(0, 5).map(name);
  return {images, figures, wide, inner, scroll_width: document.documentElement.scrollWidth,
          ids: [...document.querySelectorAll("[id]")].map(el => el.id),
          toc: [...document.querySelectorAll("nav#toc a[href^='#']")].map(a => a.getAttribute("href").slice(1))};
}"""


@dataclass
class View:
    """One page open at one viewport, with everything it logged since it was opened."""

    page: object  # playwright.sync_api.Page
    width: int
    height: int
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # requests that failed, or went to the network
    measured: dict | None = None

    def measure(self) -> dict:
        """The page's images, ``svg.figure``s, ids, table of contents and widths (see ``MEASURE``)."""
        self.measured = self.page.evaluate(MEASURE, self.width)
        return self.measured

    def problems(self, sections: list[str] = ()) -> list[str]:
        """What is wrong with the page, one line each: errors logged, resources that failed or went to the
        network, images not loaded or not shown, empty figures, ``sections`` missing from the page or from
        ``nav#toc``, a page wider than the viewport."""
        m = self.measure()
        out = [f"console error: {e}" for e in self.console_errors]
        out += [f"page error: {e}" for e in self.page_errors]
        out += [f"request failed: {e}" for e in self.failed]
        for img in m["images"]:
            if not img["complete"] or img["natural"] == 0:
                out.append(f"image not loaded: {img['what']} src={img['src']!r}")
            elif not img["shown"] or img["width"] < 1 or img["height"] < 1:
                out.append(f"image not shown: {img['what']} ({img['width']:.0f}x{img['height']:.0f} px)")
        for fig in m["figures"]:
            if not fig["shown"] or fig["width"] < 1 or fig["height"] < 1:
                out.append(f"figure not shown: {fig['what']} ({fig['width']:.0f}x{fig['height']:.0f} px)")
        ids, toc = set(m["ids"]), set(m["toc"])
        out += [f"section missing from the page: #{s}" for s in sections if s not in ids]
        out += [f"section not linked from nav#toc: #{s}" for s in sections if s not in toc]
        if m["scroll_width"] > m["inner"] + 1:
            out.append(f"page wider than the {m['inner']} px viewport: {m['scroll_width']} px "
                       f"(sticking out: {', '.join(m['wide']) or '?'})")
        return out

    def screenshot(self, path: str | Path, full_page: bool = True, clip_height: int | None = None) -> Path:
        """Save a PNG of the page (the whole page, or its top ``clip_height`` CSS pixels); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.evaluate("window.scrollTo(0, 0)")
        if clip_height:
            height = min(clip_height, self.page.evaluate("document.documentElement.scrollHeight"))
            self.page.screenshot(path=str(path), clip={"x": 0, "y": 0, "width": self.width, "height": height},
                                 full_page=True)
        else:
            self.page.screenshot(path=str(path), full_page=full_page)
        return path

    def close(self) -> None:
        self.page.context.close()


class Browser:
    """A headless Chromium (one process, many pages), as a context manager."""

    def __init__(self, executable: str | None = None):
        self.executable = executable or chromium_path()
        if self.executable is None:
            raise FileNotFoundError(unavailable())
        self._playwright = self.browser = None

    def __enter__(self) -> "Browser":
        from playwright.sync_api import sync_playwright

        self._playwright = sync_playwright().start()
        try:
            # containers often give /dev/shm 64 MB, too little for a long page: use /tmp instead
            self.browser = self._playwright.chromium.launch(executable_path=self.executable, headless=True,
                                                            args=["--disable-dev-shm-usage"])
        except Exception:
            self._playwright.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.browser.close()
        self._playwright.stop()

    def open(self, page: str | Path, width: int = DESKTOP[0], height: int = DESKTOP[1]) -> View:
        """Open ``page`` (an HTML file's path, or a URL) at ``width`` x ``height`` CSS pixels, like a phone when
        narrower than 600 px (touch, mobile viewport), and wait until it has loaded."""
        mobile = width < 600
        context = self.browser.new_context(viewport={"width": width, "height": height}, is_mobile=mobile,
                                           has_touch=mobile, device_scale_factor=1)
        context.set_default_timeout(15_000)  # ms: a missing element fails in seconds, not Playwright's 30
        view = View(context.new_page(), width, height)
        view.page.on("console", lambda m: view.console_errors.append(m.text) if m.type == "error" else None)
        view.page.on("pageerror", lambda e: view.page_errors.append(str(e)))
        view.page.on("requestfailed", lambda r: view.failed.append(f"{r.url[:80]} ({r.failure})"))
        view.page.on("request", lambda r: None if r.url.split(":", 1)[0] in ("data", "file", "about", "blob")
                     else view.failed.append(f"{r.url[:80]} (a network request: the page must be self-contained)"))
        url = page if "://" in str(page) else Path(page).resolve().as_uri()
        view.page.goto(url, wait_until="load")
        return view
