"""The semantic analysis for the page (``analyze``'s outputs): classes × concepts heatmaps as HTML tables whose
cells carry their value, interval, q and row count in a tooltip (significant cells outlined), the concepts
blamed per class in words, and the encoder-vs-head fault localisation.

Reads ``analyze/heatmaps_<source>.parquet`` (long table: ``kind, class, concept, n, value, low, high, p, q,
significant, reliable``), ``concepts.json`` (class and concept order) and ``summary.json`` (``responsible``,
``faults``, ``trust``, ``aligner``)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from conceptlens.report.outputs import finite, read_json
from conceptlens.report.svg import cell_colour, legend_gradient

MAX_CONCEPTS = 60  # columns per heatmap; beyond, the concepts with the most significant cells are kept
SOURCE_ORDER = ("vlm", "aligned")  # the VLM's view first: an observer independent of the classifier
SOURCES = {
    "vlm": "the VLM's own view of each image (independent of the classifier)",
    "aligned": "the classifier's encoder features mapped into the VLM's space (what the encoder itself represents)",
}
# kind: (title, what a cell holds, diverging scale, shown for every source)
VIEWS = {
    "differential": ("correct − incorrect", "mean concept z-score of the class's correctly classified rows minus "
                     "that of its misclassified rows (blue: the concept is stronger in failures; red: weaker); "
                     "Welch test, Benjamini–Hochberg q", True, True),
    "risk_ratio": ("risk ratio", "how much more often the class fails when the concept is present than when it is "
                   "absent (log scale; red: fails more with it; blue: fails more without it); Fisher test, "
                   "Benjamini–Hochberg q", True, True),
    "correct": ("correct rows", "mean concept z-score of the class's correctly classified rows", False, True),
    "incorrect": ("incorrect rows", "mean concept z-score of the class's misclassified rows", False, True),
    "ground_truth": ("by label", "mean concept z-score of the rows of each label (the labels as given)", False, False),
    "output": ("by prediction", "mean concept z-score of the rows of each predicted class", False, False),
    "binarized": ("share present", "share of the class's rows where the concept is present", False, False),
    "binarized_differential": ("share present: correct − incorrect", "share present among correct rows minus "
                               "among misclassified rows", True, False),
}
OPEN_VIEWS = ("differential", "risk_ratio")


def _column(table, name: str) -> np.ndarray:
    return np.asarray(table[name].to_numpy(zero_copy_only=False))


def pivot(table, kind: str, classes: list[str], concepts: list[str]) -> dict[str, np.ndarray]:
    """The cells of ``kind`` as ``(K, C)`` arrays per column (value, low, high, q, n, significant, reliable); cells
    the table lacks are NaN (False for the flags)."""
    rows = {name: _column(table, name) for name in table.column_names}
    pick = rows["kind"] == kind
    k, c = len(classes), len(concepts)
    out = {name: np.full((k, c), np.nan) for name in ("value", "low", "high", "q", "n")}
    out |= {name: np.zeros((k, c), bool) for name in ("significant", "reliable")}
    class_index = {name: i for i, name in enumerate(classes)}
    concept_index = {name: j for j, name in enumerate(concepts)}
    for r in np.flatnonzero(pick):
        i, j = class_index.get(rows["class"][r]), concept_index.get(rows["concept"][r])
        if i is None or j is None:
            continue
        for name in ("value", "low", "high", "q", "n"):
            if name in rows and rows[name][r] is not None:
                out[name][i, j] = float(rows[name][r])
        for name in ("significant", "reliable"):
            if name in rows:
                out[name][i, j] = bool(rows[name][r])
    return out


def _fmt(x: float, digits: int = 3) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:.{digits}g}"


def cell_tip(kind: str, cls: str, concept: str, cells: dict, i: int, j: int) -> str:
    """A cell's tooltip: class × concept, the value with its 95 % interval, q and significance, the rows."""
    value, low, high, q, n = (cells[name][i, j] for name in ("value", "low", "high", "q", "n"))
    title = VIEWS[kind][0]
    if kind == "risk_ratio" and math.isfinite(value):
        line = (f"{title}: ×{_fmt(math.exp(value))} (95% interval ×{_fmt(math.exp(low)) if math.isfinite(low) else '–'}"
                f" to ×{_fmt(math.exp(high)) if math.isfinite(high) else '–'}); log {_fmt(value)}")
    else:
        line = f"{title}: {_fmt(value)} (95% interval {_fmt(low)} to {_fmt(high)})"
    tested = "q = " + (f"{_fmt(q)}{', significant' if cells['significant'][i, j] else ''}" if math.isfinite(q)
                       else "– (not tested)")
    rows = "misclassified rows" if kind in ("differential", "risk_ratio", "binarized_differential") else "rows"
    lines = [f"{cls} × {concept}", line, tested, f"n = {_fmt(n)} {rows}"]
    if not cells["reliable"][i, j]:
        lines.append("unreliable: the VLM cannot tell this concept from its absence")
    return "\n".join(lines)


def view(kind: str, source: str, classes: list[str], concepts: list[str], cells: dict) -> dict:
    """One heatmap as rows of cells ``{"bg", "fg", "tip", "sig", "text"}`` for the template."""
    title, about, diverging, _ = VIEWS[kind]
    values = cells["value"][np.isfinite(cells["value"])]
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    if kind in ("binarized",):
        low, high = 0.0, 1.0
    rows = []
    for i, cls in enumerate(classes):
        row = []
        for j, concept in enumerate(concepts):
            v = finite(cells["value"][i, j])
            bg, fg = cell_colour(v, low, high, diverging=diverging)
            row.append({"bg": bg, "fg": fg, "tip": cell_tip(kind, cls, concept, cells, i, j),
                        "sig": bool(cells["significant"][i, j]), "text": "•" if cells["significant"][i, j] else ""})
        rows.append({"class": cls, "cells": row})
    limit = max(abs(low), abs(high))
    scale = (f"{_fmt(-limit)} … 0 … {_fmt(limit)}" if diverging else f"{_fmt(low)} … {_fmt(high)}")
    if kind == "risk_ratio":
        scale = f"×{_fmt(math.exp(-limit))} … ×1 … ×{_fmt(math.exp(limit))}"
    return {"id": f"hm-{source}-{kind}", "kind": kind, "title": title, "about": about, "rows": rows,
            "concepts": concepts, "gradient": legend_gradient(diverging=diverging), "scale": scale,
            "significant": int(cells["significant"].sum()), "open": kind in OPEN_VIEWS}


def chosen_concepts(table, classes: list[str], concepts: list[str],
                    limit: int = MAX_CONCEPTS) -> tuple[list[str], str | None]:
    """All concepts, or when there are more than ``limit`` the ``limit`` with the most significant cells (in their
    order), with a note saying how many were kept."""
    if len(concepts) <= limit:
        return concepts, None
    counts = np.zeros(len(concepts))
    for kind in OPEN_VIEWS:
        counts += pivot(table, kind, classes, concepts)["significant"].sum(axis=0)
    keep = sorted(np.argsort(-counts, kind="stable")[:limit])
    return [concepts[j] for j in keep], f"first {limit} of {len(concepts)} concepts (those with the most significant cells)"


def responsible_words(items: list[dict], cls: str, top: int = 3) -> list[dict]:
    """The concepts blamed for a class's failures, in words (``{"text", "reliable", "q"}``), the largest change
    first, at most ``top`` of those the trust check backs plus any unreliable ones among them."""
    out, said = [], set()
    for item in items:
        ratio = finite(item.get("risk_ratio"))
        if ratio is None or ratio <= 0:
            continue
        group = item["concept"].split("=")[0] if "=" in item["concept"] else item["concept"]
        if (group, item.get("q")) in said:  # the other side of a two-valued group: the same finding again
            continue
        said.add((group, item.get("q")))
        if item.get("direction") == "missing in failures" or ratio < 1:
            text = f"{cls} images without {item['concept']} fail {1 / ratio:.1f}× as often as those with it"
        else:
            text = f"{cls} images with {item['concept']} fail {ratio:.1f}× as often as those without it"
        out.append({"text": text, "reliable": bool(item.get("reliable", True)), "q": finite(item.get("q"))})
        if sum(o["reliable"] for o in out) >= top:
            break
    return out


def faults(summary: dict, classes: list[str]) -> dict | None:
    """Encoder-vs-head localisation: overall and per class ``{"name", "misclassified", "encoder", "head",
    "encoder_share", "head_share"}`` (classes without errors left out)."""
    found = summary.get("faults")
    if not found or "overall" not in found:
        return None

    def row(name: str, s: dict) -> dict:
        return {"name": name} | {k: s.get(k) for k in ("misclassified", "encoder", "head", "encoder_share",
                                                        "head_share", "encoder_oracle_recognises",
                                                        "head_oracle_recognises")}
    per_class = found.get("per_class", {})
    return {"overall": row("all classes", found["overall"]), "reliable": found.get("reliable", True),
            "classes": [row(c, per_class[c]) for c in classes if per_class.get(c, {}).get("misclassified")]}


def semantic(run: Path) -> dict | None:
    """The semantic section's content, None when ``analyze`` did not run."""
    folder = run / "analyze"
    if not folder.is_dir():
        return None
    summary, names = read_json(folder / "summary.json"), read_json(folder / "concepts.json")
    if summary is None or names is None:
        return {"missing": f"{folder} holds no summary.json or concepts.json (analyze did not finish)"}
    classes, concepts = list(names["classes"]), list(names["concepts"])
    found = [s for s in SOURCE_ORDER if (folder / f"heatmaps_{s}.parquet").is_file()]
    found += sorted(p.stem.removeprefix("heatmaps_") for p in folder.glob("heatmaps_*.parquet")
                    if p.stem.removeprefix("heatmaps_") not in found)
    sources = []
    for n, source in enumerate(found):
        table = pq.read_table(folder / f"heatmaps_{source}.parquet")
        kinds = set(_column(table, "kind").tolist())
        shown, note = chosen_concepts(table, classes, concepts)
        views = [view(kind, source, classes, shown, pivot(table, kind, classes, shown)) for kind in VIEWS
                 if kind in kinds and (n == 0 or VIEWS[kind][3])]
        blamed = summary.get("responsible", {}).get(source, {})
        sources.append({"source": source, "about": SOURCES.get(source, source), "views": views, "note": note,
                        "responsible": [{"class": c, "items": responsible_words(blamed.get(c, []), c)} for c in classes
                                        if c in blamed]})
    trust = summary.get("trust", {})
    return {"rows": summary.get("rows"), "misclassified": summary.get("misclassified"), "sources": sources,
            "warnings": list(trust.get("warnings", [])), "sees_classes": trust.get("sees_classes", True),
            "aligner": summary.get("aligner", {}), "zero_shot": summary.get("zero_shot_accuracy", {}),
            "faults": faults(summary, classes)}
