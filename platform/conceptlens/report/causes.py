"""Root causes for the page: one card per failure cluster (``rootcause/cards.json``: size, the true → predicted
pairs, the concepts that set it apart, a montage of its failures from ``rootcause/figures``) with the sentences
that describe it (``explain/summary.json``, ``explain/sentences.parquet``: the sentence shown as the failure
mode, then the next validated ones of the same method)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from conceptlens.report.images import image_uri
from conceptlens.report.outputs import capped, finite, read_json

MAX_CARDS = 12
CLUSTER_SIZE = "size"  # not a truth column: a card's count of failures in its cluster (rootcause/cards.json)
MORE_SENTENCES = 3  # validated sentences shown after the failure mode's


def sentences_of(folder: Path) -> tuple[dict[int, dict], dict]:
    """Per cluster, ``{"shown": [...], "more": [...]}`` sentences (``{"sentence", "error_rate", "low", "high",
    "rest_error_rate", "q"}``) of ``explain``'s default method, and ``{"method", "source"}``; empty when
    ``explain`` did not run."""
    summary = read_json(folder / "summary.json")
    if summary is None:
        return {}, {}
    if summary.get("withheld"):  # the VLM is not trusted: no sentence is a finding
        return {}, {"withheld": summary["withheld"], "source": summary.get("source")}
    out: dict[int, dict] = {}
    for cluster in summary.get("clusters", []):
        out[int(cluster["cluster"])] = {"shown": [_sentence(s) for s in cluster.get("sentences", [])], "more": []}
    path = folder / "sentences.parquet"
    if path.is_file():
        table = pq.read_table(path, columns=["cluster", "method", "rank", "sentence", "error_rate", "rest_error_rate",
                                             "low", "high", "q", "validated", "shown"]).to_pylist()
        method = summary.get("method")
        for row in sorted(table, key=lambda r: (r["cluster"], r["rank"])):
            entry = out.setdefault(int(row["cluster"]), {"shown": [], "more": []})
            if row["method"] != method or row["shown"] or not row["validated"]:
                continue
            shown = {s["sentence"] for s in entry["shown"]}
            if row["sentence"] not in shown and len(entry["more"]) < MORE_SENTENCES:
                entry["more"].append(_sentence(row))
    return out, {"method": summary.get("method"), "source": summary.get("source")}


def _sentence(row: dict) -> dict:
    return {"sentence": row["sentence"]} | {k: finite(row.get(k)) for k in ("error_rate", "low", "high",
                                                                          "rest_error_rate", "q")}


def root_causes(run: Path) -> dict | None:
    """The root-cause section's content (cards of the held-out failure clusters, the largest first), None when
    ``rootcause`` did not run."""
    folder = run / "rootcause"
    if not folder.is_dir():
        return None
    cards_by_set, summary = read_json(folder / "cards.json"), read_json(folder / "summary.json") or {}
    if cards_by_set is None:
        return {"missing": f"{folder} holds no cards.json (rootcause did not finish)"}
    sentences, explained = sentences_of(run / "explain")
    sets = []
    for name, cards in cards_by_set.items():
        chosen = summary.get("sets", {}).get(name, {})
        ordered = sorted(cards, key=lambda c: -c.get(CLUSTER_SIZE, 0))
        shown, note = capped(ordered, MAX_CARDS)
        out = []
        for card in shown:
            cluster = int(card["cluster"])
            montage = folder / "figures" / f"{name}_cluster_{cluster}.png"
            pairs, more_pairs = capped(card.get("pairs", []), 4)
            out.append({"cluster": cluster, "failures": card.get(CLUSTER_SIZE), "share": finite(card.get("share")),
                        "pairs": pairs, "more_pairs": len(card.get("pairs", [])) - len(pairs),
                        "concepts": [{k: (c[k] if k == "concept" else finite(c.get(k)))
                                      for k in ("concept", "cluster_share", "correct_share", "ratio", "q")}
                                     for c in card.get("concepts", [])[:5]],
                        "montage": image_uri(montage, photo=True) if montage.is_file() else None,
                        "sentences": sentences.get(cluster, {"shown": [], "more": []})})
        sets.append({"name": name, "cards": out, "note": note, "failures": chosen.get("failures"),
                     "pipeline": (chosen.get("chosen") or {}).get("pipeline"),
                     "index": finite((chosen.get("chosen") or {}).get("index")),
                     "clusters": len(cards), "untrusted": chosen.get("untrusted_extractors", [])})
    return {"sets": sets, "explained": explained, "explain_ran": (run / "explain").is_dir(),
            "pipelines": _pipelines(folder)}


def _pipelines(folder: Path) -> int | None:
    path = folder / "pipelines.parquet"
    if not path.is_file():
        return None
    return int(np.unique(pq.read_table(path, columns=["pipeline"])["pipeline"].to_numpy(zero_copy_only=False)).size)
