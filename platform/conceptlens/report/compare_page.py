"""The comparison of two runs (:func:`conceptlens.report.compare.compare_outputs`) as printed lines and as one
self-contained HTML page (``compare.html.j2`` on the report's ``base.html.j2``)."""
from __future__ import annotations

import math

from conceptlens.report.page import num, render

SECTIONS = [("summary", "What changed"), ("runs", "The two runs"), ("accuracy", "Classifier accuracy"),
            ("slices", "Planted slices"), ("blamed", "Blamed concepts per class"), ("causes", "Root causes"),
            ("filter", "Runtime filter"), ("goals", "Scorecard goals")]
PER_CLASS, LISTED = 4, 12  # printed: blamed concepts per class, significant changes (the page lists all)
TESTS = {"mcnemar": "McNemar", "delong": "DeLong", "wilson": "Wilson intervals",
         "hanley-mcneil": "Hanley–McNeil intervals", "risk-ratio": "risk-ratio intervals"}


def est(e: dict | None) -> str:
    """``0.624 [0.557, 0.687] n=213``, ``0.95 (no interval)`` or ``–``."""
    if not e or e.get("value") is None:
        return "–"
    if e.get("low") is None:
        return f"{num(e['value'])} (no interval)"
    n = f" n={e['n']}" if e.get("n") else ""
    return f"{num(e['value'])} [{num(e['low'])}, {num(e['high'])}]{n}"


def delta(c: dict) -> str:
    """``Δ +0.247 [+0.15, +0.33] *`` (``*``: significant), ``Δ +0.01`` without an interval, or the note."""
    if c.get("delta") is None:
        return c.get("note") or "–"
    interval = f" [{c['delta_low']:+.3g}, {c['delta_high']:+.3g}]" if c.get("delta_low") is not None else ""
    return f"Δ {c['delta']:+.3g}{interval}{' *' if c['significant'] else ''}"


def test_used(c: dict) -> str:
    """``McNemar, paired on 3000 rows, p = 3.1e-09 (A right, B wrong: 20; B right, A wrong: 74)``,
    ``Wilson intervals, unpaired`` or ``""`` (no test: no interval)."""
    name = c.get("test")
    if not name:
        return ""
    if not c.get("paired"):
        return f"{TESTS.get(name, name)}, unpaired"
    found = c.get("discordant")
    rows = (f" (A right, B wrong: {found['a_right_b_wrong']}; B right, A wrong: {found['b_right_a_wrong']})"
            if found else "")
    return f"{TESTS.get(name, name)}, paired on {c['rows_paired']} rows, p = {c['p']:.2g}{rows}"


def pairing_line(p: dict) -> str:
    """Whether the runs' rows were paired: ``rows: 3000 same images in both runs (3000 by content digest) …``."""
    if not p.get("paired"):
        return f"rows: not paired ({p.get('why')}): unpaired tests"
    by = ", ".join(f"{n} by {how}" for how, n in p["by"].items() if n)
    return (f"rows: {p['same_images']} same images in both runs ({by}; runs of {p['rows'][0]} and {p['rows'][1]} "
            f"rows): paired tests where per-row outputs exist")


def _causes_line(causes: dict) -> str:
    if "absent" in causes:
        return f"root causes: not compared: {causes['absent']}"
    trends = [p["trend"] for p in causes["persisting"]]
    detail = ", ".join(f"{trends.count(t)} {t}" for t in ("reduced", "grew") if t in trends)
    return (f"root causes: {len(causes['fixed'])} fixed, {len(causes['persisting'])} persisting"
            f"{f' ({detail})' if detail else ''}, {len(causes['new'])} new (match threshold {causes['threshold']:g})")


def _level(section: dict) -> str:
    """A section's per-row confidence: ``95%``, or ``98.3%`` for one of three simultaneous intervals."""
    return f"{100 * section['level']:.3g}%"


def _threshold(t: dict) -> str:
    moved = "" if t["relative"] is None else f" ({t['relative']:+.1%})"
    return f"{t['head']} {num(t['a'])} → {num(t['b'])}{moved}{' DRIFT' if t['drift'] else ''}"


def summary_text(result: dict, page: str | None = None) -> str:
    """The printed summary: a few aligned lines per section, ``*`` marking what is significant."""
    a, b = result["a"], result["b"]
    lines = [f"compare '{a['name']}' → '{b['name']}' ({result['rule']}; * = significant)",
             f"  A: {a['how']} [{a['run_id'][:8]}]", f"  B: {b['how']} [{b['run_id'][:8]}]"]
    if result.get("pairing"):
        lines.append(pairing_line(result["pairing"]))
    acc = result["accuracy"]
    lines.append(f"accuracy: not compared: {acc['absent']}" if "absent" in acc else
                 f"accuracy, {acc['source']}: {est(acc['a'])} → {est(acc['b'])}  {delta(acc)}"
                 f"{'  ' + test_used(acc) if test_used(acc) else ''}")
    sl = result["slices"]
    if "absent" in sl:
        lines.append(f"planted slices: not compared: {sl['absent']}")
    else:
        lines.append(f"planted slices (accuracy, {_level(sl)} intervals):")
        width = max([len(r["name"]) for r in sl["rows"]] + [4])
        lines += [f"  {r['name']:<{width}}  {est(r['a'])} → {est(r['b'])}  {delta(r)}"
                  f"{'' if r['verdict'] == r['note'] else '  ' + r['verdict']}" for r in sl["rows"]]
    bl = result["blamed"]
    if "absent" in bl:
        lines.append(f"blamed concepts: not compared: {bl['absent']}")
    else:
        c = bl["counts"]
        rows = " → ".join(str(n) if n else "?" for n in bl["analysed"])
        lines.append(f"blamed concepts ({bl['source']}, {rows} rows analysed, {_level(bl)} intervals): "
                     f"{c['appeared']} appeared, {c['disappeared']} disappeared, {c['persisting']} persisting")
        by_class: dict[str, list[tuple[float, str]]] = {}
        for r in bl["rows"]:
            if r["status"] != "persisting":
                rr = r["risk_ratio"][1 if r["status"] == "appeared" else 0]
                by_class.setdefault(r["class"], []).append(
                    (-abs(math.log(rr)) if rr else 0.0, f"{'+' if r['status'] == 'appeared' else '−'}{r['concept']} ×{num(rr)}"))
        for cls, items in by_class.items():  # the strongest few per class; compare.json and the page have them all
            shown = [text for _, text in sorted(items)[:PER_CLASS]]
            more = f" (+{len(items) - PER_CLASS} more)" if len(items) > PER_CLASS else ""
            lines.append(f"  {cls:<10} {'; '.join(shown)}{more}")
        if bl.get("note"):
            lines.append(f"  note: {bl['note']}")
    lines.append(_causes_line(result["causes"]))
    for cause in result["causes"].get("fixed", [])[:5]:
        lines.append(f"  fixed: {', '.join(cause['classes'])} ({cause['failures']} failures) "
                     f"{'; '.join(cause['sentences'][:1])}")
    for cause in result["causes"].get("new", [])[:5]:
        lines.append(f"  new:   {', '.join(cause['classes'])} ({cause['failures']} failures) "
                     f"{'; '.join(cause['sentences'][:1])}")
    flt = result["filter"]
    if flt.get("slices"):
        lines.append(f"filter misclassification AUROC (test rows, scorecard, {_level(flt)} intervals):")
        width = max(len(r["name"]) for r in flt["slices"])
        lines += [f"  {r['name']:<{width}}  {est(r['a'])} → {est(r['b'])}  {delta(r)}"
                  f"{'  ' + test_used(r) if r.get('paired') else ''}" for r in flt["slices"]]
    if "absent" in flt:
        lines.append(f"filter thresholds: not compared: {flt['absent']}")
    else:
        lines.append("filter thresholds: " + ", ".join(map(_threshold, flt["thresholds"])))
    g = result["goals"]
    lines.append(f"goals: not compared: {g['absent']}" if "absent" in g else
                 "goals: " + ", ".join(f"{n} {k}" for k, n in g["counts"].items()) +
                 "".join(f"\n  {r['status']}: {r['name']}" for r in g["rows"]
                         if r["status"] in ("newly met", "no longer met")))
    found = result["significant"]
    lines.append(f"significant changes: {len(found)}")
    lines += [f"  {s['what']}: {num(s['a'])} → {num(s['b'])}" for s in found[:LISTED]]
    if len(found) > LISTED:
        lines.append(f"  … {len(found) - LISTED} more on the page and in compare.json")
    if page:
        lines.append(f"page: {page}")
    return "\n".join(lines)


def scale(c: dict) -> tuple[float, float] | None:
    """The axis of a change's interval figure: both runs' values and intervals, widened to tenths within [0, 1]
    (None without a value)."""
    ends = [x for e in (c.get("a"), c.get("b")) if e and e.get("value") is not None
            for x in (e["value"], e.get("low"), e.get("high")) if x is not None]
    if not ends:
        return None
    lo = max(math.floor(min(ends) * 10) / 10, 0.0)
    return lo, max(math.ceil(max(ends) * 10) / 10, lo + 0.1)


def render_page(result: dict) -> str:
    """The comparison as one self-contained HTML page."""
    return render("compare.html.j2", r=result, sections=[{"id": i, "title": t} for i, t in SECTIONS], est=est,
                  delta=delta, scale=scale, test_used=test_used, pairing_line=pairing_line)
