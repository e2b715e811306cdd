"""Neurons and the repaired head for the page (``neurons``' outputs): per class, the voted neurons with the
concepts their activation follows (``neurons.parquet``) and the CLIP-Illusion grid (``figures/class_<c>.png``);
and the mitigation's accuracy per class before and after the head was repaired (``repair.parquet``,
``metrics.json``)."""
from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from conceptlens.report.images import image_uri
from conceptlens.report.outputs import capped, finite, read_json
from conceptlens.report.svg import before_after

NEURONS_PER_CLASS = 3
DIRECTIONS = {"insufficient": "its mistakes lack it", "excessive": "its mistakes have too much of it"}


def neuron_rows(table: list[dict], cls: str, top: list[int]) -> tuple[list[dict], int]:
    """The class's neurons: those the repair edits (``top``) first, then by votes; at most
    :data:`NEURONS_PER_CLASS`; and how many the class has."""
    mine = [r for r in table if r["class"] == cls]
    order = {n: i for i, n in enumerate(top)}
    mine.sort(key=lambda r: (order.get(r["neuron"], len(order)), -(r.get("votes") or 0)))
    out = []
    for r in mine[:NEURONS_PER_CLASS]:
        concepts = [{"concept": c, "r": finite(v), "low": finite(lo), "high": finite(hi), "q": finite(q)}
                    for c, v, lo, hi, q in zip(r.get("concepts") or [], r.get("r") or [], r.get("low") or [],
                                               r.get("high") or [], r.get("q") or [])]
        out.append({"neuron": r["neuron"], "direction": DIRECTIONS.get(r.get("direction"), r.get("direction")),
                    "votes": r.get("votes"), "share": finite(r.get("share")), "mistakes": r.get("mistakes"),
                    "concepts": concepts, "edited": r["neuron"] in order})
    return out, len(mine)


def neurons(run: Path) -> dict | None:
    """The neurons section's content, None when ``neurons`` did not run."""
    folder = run / "neurons"
    if not folder.is_dir():
        return None
    metrics = read_json(folder / "metrics.json")
    if metrics is None or not (folder / "neurons.parquet").is_file():
        return {"missing": f"{folder} holds no metrics.json or neurons.parquet (neurons did not finish)"}
    table = pq.read_table(folder / "neurons.parquet").to_pylist()
    edited = metrics.get("repair", {}).get("neurons", {})
    classes = metrics.get("classes") or sorted({r["class"] for r in table})
    out = []
    for cls in classes:
        rows, total = neuron_rows(table, cls, list(edited.get(cls, [])))
        figure = folder / "figures" / f"class_{cls}.png"
        if rows or figure.is_file():
            out.append({"class": cls, "neurons": rows, "total": total,
                        "figure": image_uri(figure, photo=True) if figure.is_file() else None})
    return {"classes": out, "mistakes": metrics.get("mistakes"), "flipped": finite(metrics.get("flipped")),
            "voted": metrics.get("voted_neurons"), "eval_split": metrics.get("eval_split")}


def repair(run: Path) -> dict | None:
    """The mitigation's before/after, None when ``neurons`` wrote no ``repair.parquet``: per method overall
    accuracy, per class ``{"class", "rows", "before", "after", "change"}`` for the edit the run chose, and the
    before/after figure."""
    folder = run / "neurons"
    if not (folder / "repair.parquet").is_file():
        return None
    metrics = read_json(folder / "metrics.json") or {}
    rows = pq.read_table(folder / "repair.parquet").to_pylist()
    accuracy = {(r["method"], r["class"]): finite(r["accuracy"]) for r in rows}
    counts = {r["class"]: r["rows"] for r in rows}
    methods = list(dict.fromkeys(r["method"] for r in rows))
    base = "base" if "base" in methods else methods[0]
    chosen = metrics.get("repair", {}).get("edit") or next((m for m in methods if m != base), base)
    classes = [c for c in dict.fromkeys(r["class"] for r in rows) if c != "all"]
    per_class = [{"class": c, "rows": counts.get(c), "before": accuracy.get((base, c)), "after": accuracy.get((chosen, c))}
                 for c in classes]
    for row in per_class:
        row["change"] = None if row["before"] is None or row["after"] is None else row["after"] - row["before"]
    overall = [{"method": m, "accuracy": accuracy.get((m, "all")), "chosen": m == chosen, "base": m == base,
                "change": None if accuracy.get((m, "all")) is None or accuracy.get((base, "all")) is None
                else accuracy[(m, "all")] - accuracy[(base, "all")]} for m in methods]
    shown, note = capped(sorted(per_class, key=lambda r: -(abs(r["change"]) if r["change"] is not None else 0)), 40)
    figure = before_after([{"label": r["class"], "before": r["before"], "after": r["after"]} for r in shown],
                          title=f"accuracy per class: {base} → {chosen}", before=base, after=chosen, width=520)
    return {"base": base, "chosen": chosen, "methods": methods, "overall": overall, "classes": per_class,
            "figure": figure, "note": note, "eval_split": metrics.get("eval_split"),
            "registered": metrics.get("registered"),
            "matrix": [{"class": c, "cells": [accuracy.get((m, c)) for m in methods]} for c in ["all"] + classes]}
