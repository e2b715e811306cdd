"""Small, crisp figures for the page without a plotting library: cell colours for HTML heatmaps, and line
charts (ROC curves, trade-offs) and paired bars as inline SVG strings. Every string that comes from data is
escaped; every point carries a ``<title>`` (the browser's tooltip)."""
from __future__ import annotations

import math
from html import escape

from markupsafe import Markup

PALETTE = ("#2f5fb3", "#d1495b", "#2a9d8f", "#e9a03b", "#7b4fb3", "#6c757d", "#1b998b", "#c05299")
SEQUENTIAL = ((247, 251, 255), (107, 174, 214), (8, 48, 107))  # white → mid blue → dark blue
DIVERGING = ((33, 102, 172), (247, 247, 247), (178, 24, 43))  # blue (negative) → white → red (positive)


def _mix(a: tuple, b: tuple, t: float) -> tuple:
    return tuple(round(x + (y - x) * t) for x, y in zip(a, b))


def cell_colour(value: float | None, low: float, high: float, *, diverging: bool) -> tuple[str, str]:
    """Background and text colour (``#rrggbb``) of a heatmap cell. Sequential: ``low`` (white) to ``high`` (dark
    blue); diverging: blue below 0, red above, white at 0, full colour at ``max(|low|, |high|)``. A missing
    value is light grey."""
    if value is None or not math.isfinite(value):
        return "#e6e6e6", "#000000"
    if diverging:
        limit = max(abs(low), abs(high)) or 1.0
        t = max(-1.0, min(1.0, value / limit))
        rgb = _mix(DIVERGING[1], DIVERGING[2], t) if t >= 0 else _mix(DIVERGING[1], DIVERGING[0], -t)
    else:
        t = 0.0 if high <= low else max(0.0, min(1.0, (value - low) / (high - low)))
        rgb = _mix(SEQUENTIAL[0], SEQUENTIAL[1], 2 * t) if t < 0.5 else _mix(SEQUENTIAL[1], SEQUENTIAL[2], 2 * t - 1)
    luminance = 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]
    return "#%02x%02x%02x" % rgb, ("#000000" if luminance > 140 else "#ffffff")


def legend_gradient(*, diverging: bool) -> str:
    """A CSS ``linear-gradient`` of the scale, for a legend swatch."""
    stops = DIVERGING if diverging else SEQUENTIAL
    return "linear-gradient(90deg, " + ", ".join("rgb(%d,%d,%d)" % c for c in stops) + ")"


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (steps of 1, 2, 2.5 or 5 × 10^k) inside ``[low, high]``, about ``count`` of them."""
    if high <= low:
        return [low]
    raw = (high - low) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.ceil(low / step - 1e-9) * step
    return [round(first + i * step, 10) for i in range(int((high - first) / step + 1e-9) + 1)]


def line_chart(lines: list[dict], *, title: str, xlabel: str, ylabel: str, x_range: tuple[float, float] = (0, 1),
               y_range: tuple[float, float] | None = None, diagonal: bool = False, marks: list[dict] = (),
               width: int = 380, height: int = 300) -> Markup:
    """An inline ``<svg class="figure">`` line chart. ``lines``: ``[{"label", "x": [...], "y": [...]}]`` (equal
    lengths; NaN points skipped); ``marks``: single points ``[{"label", "x", "y"}]`` drawn as rings (e.g. an
    operating point); ``diagonal``: the chance line y = x. The y range is the data's unless given."""
    left, right, top, bottom = 52, 10, 26, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    ys = [y for line in lines for y in line["y"] if y is not None and math.isfinite(y)] + [m["y"] for m in marks]
    if y_range is None:
        lo, hi = (min(ys), max(ys)) if ys else (0.0, 1.0)
        pad = (hi - lo) * 0.08 or 0.05
        y_range = (lo - pad, hi + pad)
    x0, x1 = x_range
    y0, y1 = y_range

    def px(x: float) -> float:
        return left + (x - x0) / ((x1 - x0) or 1) * plot_w

    def py(y: float) -> float:
        return top + (1 - (y - y0) / ((y1 - y0) or 1)) * plot_h

    out = [f'<svg class="figure" viewBox="0 0 {width} {height + 18 * len(lines)}" '
           f'width="{width}" height="{height + 18 * len(lines)}" role="img" aria-label="{escape(title)}" '
           f'font-family="system-ui, sans-serif" font-size="11">',
           f'<text x="{width / 2:.0f}" y="15" text-anchor="middle" font-size="12" font-weight="600">{escape(title)}</text>',
           f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fff" stroke="#999"/>']
    for x in _ticks(x0, x1):
        out.append(f'<line x1="{px(x):.1f}" y1="{top}" x2="{px(x):.1f}" y2="{top + plot_h}" stroke="#eee"/>'
                   f'<text x="{px(x):.1f}" y="{top + plot_h + 14}" text-anchor="middle">{x:.2g}</text>')
    for y in _ticks(y0, y1):
        out.append(f'<line x1="{left}" y1="{py(y):.1f}" x2="{left + plot_w}" y2="{py(y):.1f}" stroke="#eee"/>'
                   f'<text x="{left - 4}" y="{py(y) + 4:.1f}" text-anchor="end">{y:.3g}</text>')
    out.append(f'<text x="{left + plot_w / 2:.0f}" y="{top + plot_h + 30}" text-anchor="middle">{escape(xlabel)}</text>'
               f'<text transform="translate(11 {top + plot_h / 2:.0f}) rotate(-90)" text-anchor="middle">'
               f'{escape(ylabel)}</text>')
    if diagonal:
        out.append(f'<line x1="{px(x0):.1f}" y1="{py(y0):.1f}" x2="{px(x1):.1f}" y2="{py(y1):.1f}" '
                   f'stroke="#bbb" stroke-dasharray="4 3"/>')
    for i, line in enumerate(lines):
        colour = PALETTE[i % len(PALETTE)]
        points = [(x, y) for x, y in zip(line["x"], line["y"]) if y is not None and math.isfinite(y)]
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2">'
                   f'<title>{escape(line["label"])}</title></polyline>')
        out.append(f'<rect x="{left}" y="{height + 18 * i - 2}" width="14" height="4" fill="{colour}"/>'
                   f'<text x="{left + 20}" y="{height + 18 * i + 3}">{escape(line["label"])}</text>')
    for i, mark in enumerate(marks):
        colour = PALETTE[i % len(PALETTE)] if mark.get("colour") is None else mark["colour"]
        out.append(f'<circle cx="{px(mark["x"]):.1f}" cy="{py(mark["y"]):.1f}" r="5" fill="none" stroke="{colour}" '
                   f'stroke-width="2"><title>{escape(mark["label"])}</title></circle>')
    out.append("</svg>")
    return Markup("".join(out))


def before_after(rows: list[dict], *, title: str, before: str, after: str, width: int = 420) -> Markup:
    """Paired horizontal dots per row (``{"label", "before", "after"}``, values in [0, 1]) joined by an arrow-less
    line: where a class was and where it is now. Green when it improved, red when it got worse."""
    left, right, top, row_h = 96, 46, 30, 20
    plot_w = width - left - right
    height = top + row_h * len(rows) + 30
    lows = [min(r["before"], r["after"]) for r in rows if r["before"] is not None and r["after"] is not None]
    x0 = max(0.0, math.floor(min(lows + [1.0]) * 10) / 10)

    def px(v: float) -> float:
        return left + (v - x0) / ((1 - x0) or 1) * plot_w

    out = [f'<svg class="figure" viewBox="0 0 {width} {height}" width="{width}" '
           f'height="{height}" role="img" aria-label="{escape(title)}" font-family="system-ui, sans-serif" '
           f'font-size="11">',
           f'<text x="{width / 2:.0f}" y="14" text-anchor="middle" font-size="12" font-weight="600">{escape(title)}</text>']
    for t in _ticks(x0, 1.0, 6):
        out.append(f'<line x1="{px(t):.1f}" y1="{top - 6}" x2="{px(t):.1f}" y2="{height - 26}" stroke="#eee"/>'
                   f'<text x="{px(t):.1f}" y="{height - 14}" text-anchor="middle">{t:.2g}</text>')
    for i, row in enumerate(rows):
        y = top + row_h * i + row_h / 2
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(str(row["label"]))}</text>')
        if row["before"] is None or row["after"] is None:
            continue
        colour = "#1b7f3b" if row["after"] > row["before"] else ("#b3261e" if row["after"] < row["before"] else "#777")
        tip = escape(f'{row["label"]}: {before} {row["before"]:.3f} → {after} {row["after"]:.3f} '
                     f'({100 * (row["after"] - row["before"]):+.1f} points)')
        out.append(f'<g><title>{tip}</title><line x1="{px(row["before"]):.1f}" y1="{y:.1f}" x2="{px(row["after"]):.1f}" '
                   f'y2="{y:.1f}" stroke="{colour}" stroke-width="3"/>'
                   f'<circle cx="{px(row["before"]):.1f}" cy="{y:.1f}" r="4" fill="#fff" stroke="#555"/>'
                   f'<circle cx="{px(row["after"]):.1f}" cy="{y:.1f}" r="4" fill="{colour}"/>'
                   f'<text x="{width - right + 4}" y="{y + 4:.1f}" fill="{colour}">'
                   f'{100 * (row["after"] - row["before"]):+.1f}</text></g>')
    out.append(f'<text x="{left}" y="{height - 2}" fill="#555">○ {escape(before)}  ● {escape(after)}; '
               f'right: change in points</text></svg>')
    return Markup("".join(out))
