"""The run at a glance: the models, the data (classes, rows per split) and the classifier's accuracy against
the labels the data came with (the user's labels, not a ground truth), per split and per class."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from conceptlens.report.outputs import read_json

COMMANDS = ("world", "embed", "analyze", "attack", "rootcause", "explain", "monitor", "neurons", "evaluate")


def classes_of(run: Path) -> list[str]:
    """The class names of the run, in ``label_index`` order (``embed``'s metrics, else ``analyze``'s or
    ``neurons``'), [] when no command recorded them."""
    for path, key in ((run / "embed" / "metrics.json", "classes"), (run / "analyze" / "concepts.json", "classes"),
                      (run / "neurons" / "metrics.json", "classes")):
        found = read_json(path)
        if found and found.get(key):
            return list(found[key])
    return []


def accuracy_table(embeddings: Path, classes: list[str]) -> dict | None:
    """Accuracy of the predictions against the labels: ``{"splits": [{"split", "rows", "accuracy"}],
    "classes": [{"class", "cells": {split: {"rows", "accuracy"}}}]}``, rows without a label (index < 0) left out;
    None without an embeddings table."""
    if not any(embeddings.glob("*.parquet")):
        return None
    table = pq.read_table(embeddings, columns=["split", "label_index", "prediction"])
    split = table["split"].to_numpy(zero_copy_only=False).astype(str)
    label, prediction = (table[name].to_numpy() for name in ("label_index", "prediction"))
    labelled = label >= 0
    names = sorted(set(split.tolist()))
    out = {"splits": [], "classes": []}
    for name in names:
        rows = labelled & (split == name)
        out["splits"].append({"split": name, "rows": int(rows.sum()),
                              "accuracy": float((label[rows] == prediction[rows]).mean()) if rows.any() else None})
    for index in range(max(len(classes), int(label.max()) + 1 if len(label) else 0)):
        cells = {}
        for name in names:
            rows = (split == name) & (label == index)
            cells[name] = {"rows": int(rows.sum()),
                           "accuracy": float((prediction[rows] == index).mean()) if rows.any() else None}
        out["classes"].append({"class": classes[index] if index < len(classes) else str(index), "cells": cells})
    out["unlabelled"] = int((~labelled).sum())
    return out


def models_rows(run: Path) -> list[dict]:
    """``[{"what", "value"}]``: the models and data the embeddings were made from (``embed/inputs.json``), else
    the models ``world`` trained (``world/models.json``)."""
    inputs = read_json(run / "embed" / "inputs.json")
    if inputs:
        record = inputs.get("inputs", {})
        names = {"classifier.arch": "classifier", "classifier.checkpoint": "classifier checkpoint",
                 "classifier.weights": "classifier weights", "classifier.head": "classifier head (split at)",
                 "vlm.arch": "vision-language model", "vlm.pretrained": "VLM weights",
                 "vlm.model_config": "VLM config", "data.source": "data", "data.image_size": "image size (px)",
                 "data.splits": "splits"}
        rows = [{"what": label, "value": _text(record[key])} for key, label in names.items()
                if record.get(key) not in (None, "", [])]
        if inputs.get("split_rule"):
            rows.append({"what": "split rule", "value": inputs["split_rule"]})
        return rows
    models = read_json(run / "world" / "models.json") or {}
    return [{"what": key, "value": _text(value)} for key, value in models.items() if value is not None]


def _text(value) -> str:
    return ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def overview(run: Path) -> dict | None:
    """The overview section's content, None when neither ``world`` nor ``embed`` ran."""
    if not (run / "embed").is_dir() and not (run / "world").is_dir():
        return None
    classes = classes_of(run)
    embed = read_json(run / "embed" / "metrics.json") or {}
    accuracy = accuracy_table(run / "embed" / "embeddings", classes) if (run / "embed").is_dir() else None
    kpis = [{"label": "classes", "value": str(len(classes))} if classes else None,
            {"label": "rows embedded", "value": f"{embed['rows']:,}"} if embed.get("rows") is not None else None]
    if accuracy:
        for row in accuracy["splits"]:
            if row["accuracy"] is not None:
                kpis.append({"label": f"accuracy on {row['split']} (vs labels)", "value": f"{100 * row['accuracy']:.1f}%"})
    ran = [c for c in COMMANDS if (run / c).is_dir()]
    return {"run": run.name, "folder": str(run.resolve()), "classes": classes, "models": models_rows(run),
            "accuracy": accuracy, "kpis": [k for k in kpis if k], "commands": ran,
            "rejects": embed.get("rejects"), "worst": _worst(accuracy)}


def _worst(accuracy: dict | None, count: int = 3) -> list[dict]:
    """The ``count`` classes with the lowest accuracy on the last split that has labels (test, usually)."""
    if not accuracy or not accuracy["splits"]:
        return []
    split = "test" if any(s["split"] == "test" for s in accuracy["splits"]) else accuracy["splits"][-1]["split"]
    scored = [(c["cells"][split]["accuracy"], c["class"]) for c in accuracy["classes"]
              if c["cells"].get(split, {}).get("accuracy") is not None]
    order = np.argsort([a for a, _ in scored], kind="stable")[:count]
    return [{"class": scored[i][1], "accuracy": scored[i][0], "split": split} for i in order]
