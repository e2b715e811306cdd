"""Attacks for the page (``attack``'s outputs): the success table per attack and ε (``metrics.json``) and a few
clean | adversarial image pairs per attack and ε with both predictions (``adversarial.parquet``, the attacked
images under ``attack/images/``, the clean ones where the embeddings table says they are)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from conceptlens.report.images import image_uri
from conceptlens.report.outputs import finite, read_json

PAIRS_PER_ATTACK = 2


def located(recorded: str, folder: Path) -> Path:
    """An attacked image: under this run's ``attack/images/<attack-ε>/`` (the run folder may have moved since),
    else where ``adversarial.parquet`` recorded it."""
    here = folder / "images" / Path(recorded).parent.name / Path(recorded).name
    return here if here.is_file() else Path(recorded)


def clean_paths(run: Path, ids: set[str]) -> dict[str, str]:
    """The image path of each clean row ``id`` in the embeddings table."""
    embeddings = run / "embed" / "embeddings"
    if not ids or not any(embeddings.glob("*.parquet")):
        return {}
    table = pq.read_table(embeddings, columns=["id", "path"])
    found = np.isin(table["id"].to_numpy(zero_copy_only=False), list(ids))
    return dict(zip(np.asarray(table["id"])[found].tolist(), np.asarray(table["path"])[found].tolist()))


def examples(run: Path, classes: list[str]) -> list[dict]:
    """Per attack and ε, up to :data:`PAIRS_PER_ATTACK` successful attacks (a correct prediction flipped), test
    rows first: ``{"attack", "epsilon", "pairs": [{"id", "label", "clean", "adversarial", "clean_uri",
    "adversarial_uri"}]}``."""
    folder = run / "attack"
    path = folder / "adversarial.parquet"
    if not path.is_file():
        return []
    rows = pq.read_table(path, columns=["id", "path", "split", "attack", "epsilon", "label_index", "clean_prediction",
                                        "adversarial_prediction", "source_id"]).to_pylist()
    flipped = [r for r in rows if r["clean_prediction"] == r["label_index"] != r["adversarial_prediction"]]
    flipped.sort(key=lambda r: (r["attack"], r["epsilon"], r["split"] != "test", r["id"]))
    picked: dict[tuple, list] = {}
    used: set[str] = set()
    for fresh in (True, False):  # images not shown yet first, so the examples vary
        for r in flipped:
            group = picked.setdefault((r["attack"], r["epsilon"]), [])
            if len(group) < PAIRS_PER_ATTACK and (r["source_id"] not in used or not fresh) and r not in group:
                group.append(r)
                used.add(r["source_id"])
    picked = {key: sorted(group, key=lambda r: r["id"]) for key, group in picked.items() if group}
    sources = clean_paths(run, {r["source_id"] for group in picked.values() for r in group})

    def name(index: int) -> str:
        return classes[index] if 0 <= index < len(classes) else str(index)
    out = []
    for (attack, eps), group in picked.items():
        pairs = []
        for r in group:
            adversarial = located(r["path"], folder)
            clean = sources.get(r["source_id"])
            pairs.append({"id": r["source_id"], "label": name(r["label_index"]), "clean": name(r["clean_prediction"]),
                          "adversarial": name(r["adversarial_prediction"]),
                          "clean_uri": image_uri(clean) if clean else None,
                          "adversarial_uri": image_uri(adversarial)})
        out.append({"attack": attack, "epsilon": eps, "pairs": pairs})
    return out


def attacks(run: Path, classes: list[str]) -> dict | None:
    """The attack section's content, None when ``attack`` did not run."""
    folder = run / "attack"
    if not folder.is_dir():
        return None
    metrics = read_json(folder / "metrics.json")
    if metrics is None:
        return {"missing": f"{folder} holds no metrics.json (attack did not finish)"}
    success = [{"name": name} | {k: finite(v.get(k)) for k in ("clean_accuracy", "adversarial_accuracy", "success_rate")}
               | {"n": v.get("n")} for name, v in sorted(metrics.get("success", {}).items())]
    return {"success": success, "examples": examples(run, classes), "rows": metrics.get("rows"),
            "rejects": metrics.get("rejects")}
