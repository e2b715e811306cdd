"""Alerts that name a known failure mode, against the planted scenarios: does a flagged error say it looks like
the root cause it really has?

The monitor's alerts table has one row per test input: ``id`` (str), ``verdict`` (str: ``"accept"`` or a flag),
``cluster`` (int64: the nearest failure mode's root-cause cluster, -1 when the predicted class has none) and
``close_enough`` (bool: within that failure mode's radius, :mod:`conceptlens.runtime.failure_modes`).

Per planted scenario, over the scenario's test rows that are errors and flagged (verdict not ``"accept"``):
``matched`` counts those close enough to the cluster that *holds* the scenario (the chosen pipeline's cluster
holding the most of the scenario's failures, decided exactly as the root-cause section does:
:func:`conceptlens.evaluation.clusters.rootcause_section`), ``other`` those close enough to another cluster,
``none_close_enough`` the rest (``no_candidate`` of them had no failure mode for their predicted class);
``matched_share`` = matched / flagged (None without a flagged error or a holding cluster). ``natural``: the same
counts for flagged errors outside every planted slice (no cluster holds them: ``close_enough`` counts those
close enough to some cluster), ``overall``: the planted scenarios together.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from conceptlens.evaluation.clusters import rootcause_section
from conceptlens.evaluation.ground_truth import Slice, Truth
from conceptlens.evaluation.scorecard import NATURAL

ACCEPT = "accept"
COLUMNS = ("id", "verdict", "cluster", "close_enough")


def holding_clusters(rootcause: dict) -> dict[str, int | None]:
    """Per planted scenario, the cluster of the chosen heldout pipeline that holds it (None: no cluster does),
    read from the scorecard's root-cause section (:func:`~conceptlens.evaluation.clusters.rootcause_section`)."""
    scores = rootcause["pipelines"][rootcause["chosen"]]["holding"]
    return {name: s["cluster"] for name, s in scores.items()}


def rootcause_of(folder: str | Path, truth: Truth, planted: list[Slice]) -> dict:
    """The root-cause section of ``rootcause``'s outputs in ``folder`` (``clusters.parquet``,
    ``pipelines.parquet``), as the scorecard computes it."""
    folder = Path(folder)
    clusters = pq.read_table(folder / "clusters.parquet", columns=["set", "id", "pipeline", "cluster"])
    ids = np.unique(clusters.filter(pc.equal(clusters["set"], "heldout"))["id"].to_numpy(zero_copy_only=False))
    return rootcause_section(clusters, pq.read_table(folder / "pipelines.parquet"),
                             dict(zip(ids, truth.scenario_of(ids))), planted)


def _columns(alerts: pa.Table | Mapping) -> dict[str, np.ndarray]:
    missing = [c for c in COLUMNS if c not in (alerts.column_names if isinstance(alerts, pa.Table) else alerts)]
    if missing:
        raise ValueError(f"the alerts table lacks column(s) {missing}: it needs {list(COLUMNS)}")
    if isinstance(alerts, pa.Table):
        return {c: alerts[c].to_numpy(zero_copy_only=False) for c in COLUMNS}
    return {c: np.asarray(alerts[c]) for c in COLUMNS}


def dominated_clusters(clusters: pa.Table, chosen: str, truth: Truth) -> dict[str, set[int]]:
    """Per scenario, the clusters of the chosen heldout pipeline more than half of whose rows are that scenario's
    (a scenario large enough to fill several clusters, split by what it is mistaken for, dominates all of them)."""
    rows = clusters.filter(pc.and_(pc.equal(clusters["set"], "heldout"), pc.equal(clusters["pipeline"], chosen)))
    ids, cluster = rows["id"].to_numpy(zero_copy_only=False), rows["cluster"].to_numpy()
    scenario = np.array(truth.scenario_of(ids), object)
    out: dict[str, set[int]] = {}
    for c in np.unique(cluster[cluster >= 0]):
        names, counts = np.unique([str(x) for x in scenario[cluster == c]], return_counts=True)
        if counts.max() > counts.sum() / 2 and names[counts.argmax()] != "None":
            out.setdefault(str(names[counts.argmax()]), set()).add(int(c))
    return out


def _counts(flagged: np.ndarray, cluster: np.ndarray, close: np.ndarray, holding: int | None,
            own: set[int] = frozenset()) -> dict:
    """Counts over the flagged errors ``flagged`` (bool mask) of one group."""
    n = int(flagged.sum())
    hit = flagged & close & (cluster == (-2 if holding is None else holding))  # -2: no cluster holds it
    matched, mine = int(hit.sum()), int((flagged & close & np.isin(cluster, list(own))).sum())
    return {"flagged": n, "matched": matched, "other": int((flagged & close).sum()) - matched,
            "none_close_enough": int((flagged & ~close).sum()), "no_candidate": int((flagged & (cluster < 0)).sum()),
            "matched_share": matched / n if n and holding is not None else None,
            "dominated_clusters": sorted(own), "matched_dominated": mine,
            "matched_dominated_share": mine / n if n and own else None}


def alerts_section(alerts: pa.Table | Mapping, wrong: Mapping[str, bool], truth: Truth,
                   planted: list[Slice], rootcause: dict | str | Path, clusters: pa.Table | None = None) -> dict:
    """The scorecard's alerts section (module docstring). ``alerts``: the monitor's per-test-row table (or a dict
    of its columns); ``wrong``: row id -> misclassified, for every id of ``alerts``; ``truth``: the world's
    truth; ``planted``: the planted scenarios; ``rootcause``: the scorecard's root-cause section, or the folder of
    ``rootcause``'s outputs; ``clusters``: its ``clusters.parquet``, for the clusters each scenario dominates
    (``matched_dominated``: close enough to any of them)."""
    own = {} if clusters is None else None
    if not isinstance(rootcause, dict):
        rootcause = rootcause_of(rootcause, truth, planted)
    holds = holding_clusters(rootcause)
    own = own if own is not None else dominated_clusters(clusters, rootcause["chosen"], truth)
    a = _columns(alerts)
    ids = a["id"].astype(object)
    missing = [i for i in ids if i not in wrong]
    if missing:
        raise ValueError(f"no error flag for alert row {missing[0]!r} (and {len(missing) - 1} more)")
    errors = np.array([bool(wrong[i]) for i in ids], bool)
    flagged = errors & (a["verdict"].astype(object) != ACCEPT)
    cluster, close = a["cluster"].astype(np.int64), a["close_enough"].astype(bool)
    names = {s.name for s in planted}
    scenario = np.array([s if s in names else None for s in truth.scenario_of(ids)], object)
    out = {"rows": len(ids), "chosen": rootcause["chosen"], "scenarios": {}}
    holding = np.full(len(ids), -2, np.int64)
    for s in planted:
        mine = scenario == s.name
        out["scenarios"][s.name] = {"holding_cluster": holds.get(s.name), "errors": int((errors & mine).sum()),
                                    **_counts(flagged & mine, cluster, close, holds.get(s.name), own.get(s.name, set()))}
        if holds.get(s.name) is not None:
            holding[mine] = holds[s.name]
    natural = np.array([s is None for s in scenario], bool)
    counts = _counts(flagged & natural, cluster, close, None)
    out[NATURAL] = {"errors": int((errors & natural).sum()), "flagged": counts["flagged"],
                    "close_enough": counts["other"], "none_close_enough": counts["none_close_enough"],
                    "no_candidate": counts["no_candidate"]}
    in_planted = flagged & ~natural
    n, hit = int(in_planted.sum()), int((in_planted & close & (cluster == holding)).sum())
    out["overall"] = {"errors": int((errors & ~natural).sum()), "flagged": n, "matched": hit,
                      "none_close_enough": int((in_planted & ~close).sum()),
                      "matched_share": hit / n if n else None}
    return out
