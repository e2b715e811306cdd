"""Root-cause clusters against the planted scenarios (METHODS.md §3, §5): purity and coverage.

* purity of a cluster: the share of its rows that belong to its dominant scenario; ``purity`` is the mean
  over clusters (noise excluded);
* coverage: the share of scenarios that dominate at least one cluster;
* per scenario: its best cluster (the one it dominates with the most of its rows), that cluster's purity
  and recall (the share of the scenario's rows in it);
* noise share: rows no cluster takes;
* **holding** (the goal's measure, issue 25): per planted scenario, the cluster that holds the most of its
  failures, that cluster's purity *counting every failure in it*, natural errors included, and the share of the
  scenario's failures it holds. A cluster that gathers one class's failures whatever their cause is as pure as
  the class's planted share, not 1.

Natural errors (``None``: outside every planted slice) are reported both ways in the purity and coverage: as their
own scenario (``with_natural``) and left out of every count (``planted_only``, a sanity line, not a goal: with the
label block and one scenario per class it holds by construction).
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from conceptlens.evaluation.scorecard import NATURAL


def cluster_scores(labels: np.ndarray, scenario: np.ndarray, noise: int = -1) -> dict:
    """Purity, coverage and per-scenario best clusters of ``labels`` (N,) int against ``scenario`` (N,) object
    (scenario name or None), both ways (module docstring)."""
    labels = np.asarray(labels)
    names = np.array([NATURAL if s is None else s for s in scenario], object)
    return {"with_natural": _scores(labels, names, noise),
            "planted_only": _scores(labels[names != NATURAL], names[names != NATURAL], noise),
            "holding": holding(labels, names, noise)}


def holding(labels: np.ndarray, names: np.ndarray, noise: int = -1) -> dict:
    """Per scenario (natural errors excluded), the cluster holding the most of its rows (noise is no cluster):
    ``{"rows", "cluster", "size", "held", "purity", "share"}``; purity counts every row of the cluster (natural errors
    included), share is the scenario's rows there over all its rows. ``cluster`` None when noise takes them all."""
    labels, names = np.asarray(labels), np.asarray(names, object)
    out = {}
    for s in sorted(set(names.tolist()) - {NATURAL}):
        mine = (names == s) & (labels != noise)
        rows = int((names == s).sum())
        if not mine.any():
            out[s] = {"rows": rows, "cluster": None, "size": 0, "held": 0, "purity": None, "share": 0.0}
            continue
        c, held = Counter(labels[mine].tolist()).most_common(1)[0]
        size = int((labels == c).sum())
        out[s] = {"rows": rows, "cluster": int(c), "size": size, "held": int(held), "purity": held / size,
                  "share": held / rows}
    return out


def _scores(labels: np.ndarray, names: np.ndarray, noise: int) -> dict:
    clustered = labels != noise
    purities, dominant = [], {}
    for c in sorted(set(labels[clustered].tolist())):
        counts = Counter(names[labels == c].tolist())
        top, size = counts.most_common(1)[0]
        purities.append(size / sum(counts.values()))
        dominant[c] = (top, size)
    scenarios = sorted(set(names.tolist()))
    per_scenario = {}
    for s in scenarios:
        owned = [(size, c) for c, (top, size) in dominant.items() if top == s]
        if not owned:
            per_scenario[s] = {"rows": int((names == s).sum()), "cluster": None, "purity": None, "recall": None}
            continue
        size, c = max(owned)
        per_scenario[s] = {"rows": int((names == s).sum()), "cluster": int(c),
                           "purity": size / int((labels == c).sum()), "recall": size / int((names == s).sum())}
    covered = sum(v["cluster"] is not None for v in per_scenario.values())
    return {"rows": int(len(labels)), "clusters": len(purities),
            "noise_share": float((~clustered).mean()) if len(labels) else None,
            "purity": float(np.mean(purities)) if purities else None,
            "coverage": covered / len(scenarios) if scenarios else None, "scenarios": per_scenario}


def rootcause_section(clusters: pa.Table, pipelines: pa.Table, scenario: dict, planted: list) -> dict:
    """The scorecard's root-cause section for the ``heldout`` failure set: every pipeline's scores (rows outside a
    planted slice, or in a scenario that was not planted, count as natural errors), the chosen pipeline's, the
    best pipeline by the truth (:func:`truth_score`) and how far the choice is from it (rank: 1 + the pipelines
    strictly better; the gap in :func:`truth_score`'s first term). ``scenario``: row id ->
    scenario name or None; ``planted``: the planted :class:`~conceptlens.evaluation.ground_truth.Slice` objects."""
    names = {s.name for s in planted}
    heldout = clusters.filter(pc.equal(clusters["set"], "heldout"))
    table = pipelines.filter(pc.equal(pipelines["set"], "heldout")).to_pylist()
    per_pipeline = {}
    for row in table:
        chosen = heldout.filter(pc.equal(heldout["pipeline"], row["pipeline"]))
        truth = np.array([s if s in names else None for s in (scenario[i] for i in chosen["id"].to_pylist())], object)
        per_pipeline[row["pipeline"]] = cluster_scores(chosen["cluster"].to_numpy(), truth) | {
            "index": row["index"], "chosen": row["chosen"]}
    ranked = sorted(per_pipeline, key=lambda name: truth_score(per_pipeline[name]), reverse=True)
    chosen = next(name for name, s in per_pipeline.items() if s["chosen"])
    better = sum(truth_score(s) > truth_score(per_pipeline[chosen]) for s in per_pipeline.values())
    return {"set": "heldout", "failures": heldout.filter(pc.equal(heldout["pipeline"], chosen)).num_rows,
            "chosen": chosen, "best_by_truth": ranked[0], "chosen_rank_by_truth": better + 1,
            "pipelines_scored": len(ranked),
            "gap_to_best": truth_score(per_pipeline[ranked[0]])[0] - truth_score(per_pipeline[chosen])[0],
            "pipelines": per_pipeline}


def truth_score(scores: dict) -> tuple[float, float]:
    """How good a pipeline is by the truth: the mean over planted scenarios of purity × share of the cluster holding
    each (natural errors counted, :func:`holding`), ties broken by planted-only purity × coverage."""
    held = [(h["purity"] or 0) * h["share"] for h in scores["holding"].values()]
    p = scores["planted_only"]
    return (float(np.mean(held)) if held else 0.0, (p["purity"] or 0) * (p["coverage"] or 0))
