"""Root-cause clusters against the planted scenarios (METHODS.md §3, §5): purity and coverage.

* purity of a cluster: the share of its rows that belong to its dominant scenario; ``purity`` is the mean
  over clusters (noise excluded);
* coverage: the share of scenarios that dominate at least one cluster;
* per scenario: its best cluster (the one it dominates with the most of its rows), that cluster's purity
  and recall (the share of the scenario's rows in it);
* noise share: rows no cluster takes.

Natural errors (``None``: outside every planted slice) are reported both ways: as their own scenario
(``with_natural``) and left out of every count (``planted_only``).
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from conceptlens.evaluation.scorecard import NATURAL


def cluster_scores(labels: np.ndarray, scenario: np.ndarray, noise: int = -1) -> dict:
    """Purity, coverage and per-scenario best clusters of ``labels`` (N,) int against ``scenario`` (N,) object
    (scenario name or None), both ways (module docstring)."""
    labels = np.asarray(labels)
    names = np.array([NATURAL if s is None else s for s in scenario], object)
    return {"with_natural": _scores(labels, names, noise),
            "planted_only": _scores(labels[names != NATURAL], names[names != NATURAL], noise)}


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
