"""ConceptWorld's truth for a run: which scenario each row belongs to, which attribute values it carries,
and the ground-truth risk-ratio heatmap that ``analyze``'s ``risk_ratio`` heatmap is scored against.

The heatmap uses the same statistics as the analysis (:mod:`conceptlens.semantic`): per class and
attribute value the 2×2 table present/absent × failed/correct, the log of the failure rate with the
value present over the rate with it absent (+0.5 smoothing), Fisher's exact test where the class has
both failures and correct rows, Benjamini–Hochberg across all cells; only the presence comes from
the world's attributes instead of concept scores.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from scipy import stats

from conceptlens.models import two_valued
from conceptlens.pipeline.stats import bh_qvalues
from conceptlens.world import ATTRIBUTE_GROUPS, GROUPS, Scenario, read_truth

NO_TRUTH = "evaluate needs a ConceptWorld run; your own data has no ground truth"


def concept_names() -> list[str]:
    """The world's attribute values as concept names, ``group=value`` (the ``conceptworld`` concept set)."""
    return [f"{g.name}={v}" for g in ATTRIBUTE_GROUPS for v in g.values]


def concept_column(concept: str) -> str:
    """``"background=water"`` -> the truth's boolean column ``"background_water"``."""
    return concept.replace("=", "_", 1)


def two_valued_partner(concept: str) -> str | None:
    """The other value of a two-valued group (``lighting=dark`` -> ``lighting=bright``), else None: for such
    a group "dark present" and "bright absent" are the same rows."""
    group, _, value = concept.partition("=")
    values = GROUPS[group].values if group in GROUPS else ()
    return f"{group}={[v for v in values if v != value][0]}" if len(values) == 2 and value in values else None


@dataclass
class WorldTruth:
    """The truth of one run's world: ``ids`` (N,) object, ``scenario`` (N,) object (name or None),
    ``present`` (N, C) bool over :func:`concept_names`, and the run's ``scenarios`` as configured."""
    ids: np.ndarray
    scenario: np.ndarray
    present: np.ndarray
    scenarios: list[Scenario]
    concepts: list[str]

    @classmethod
    def load(cls, world: Path) -> "WorldTruth":
        """From ``<run>/world/``: ``truth.parquet`` (:func:`~conceptlens.world.read_truth`; a run folder written
        before it existed keeps the truth in its ``manifest.parquet``) and the scenarios of ``config.json`` (what
        ``world`` built). A run without them has no truth: FileNotFoundError with :data:`NO_TRUTH`."""
        config = Path(world) / "config.json"
        try:
            table = read_truth(world)
        except FileNotFoundError as err:
            if not Path(world).is_dir():  # a run of one's own data: nothing to run first
                raise FileNotFoundError(f"{NO_TRUTH} (no ConceptWorld in {world})") from None
            raise FileNotFoundError(f"{NO_TRUTH} ({err}: run `conceptlens world` for this run first)") from None
        concepts = concept_names()
        scenarios = []
        if config.is_file():
            scenarios = [Scenario.from_dict(s) for s in json.loads(config.read_text())["world"]["scenarios"]]
        present = np.column_stack([table[concept_column(c)].to_numpy(zero_copy_only=False) for c in concepts])
        return cls(table["id"].to_numpy(zero_copy_only=False).astype(object),
                   table["scenario"].to_numpy(zero_copy_only=False).astype(object), present.astype(bool),
                   scenarios, concepts)

    def __post_init__(self):
        self._position = {row_id: i for i, row_id in enumerate(self.ids)}

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Positions of ``ids`` in the manifest: (N,) int64; ValueError naming an id the world does not have."""
        missing = [row_id for row_id in ids if row_id not in self._position]
        if missing:
            raise ValueError(f"row id {missing[0]!r} (and {len(missing) - 1} more) is not in this run's world "
                             f"truth: {NO_TRUTH}")
        return np.array([self._position[row_id] for row_id in ids], np.int64)

    def scenario_of(self, ids: np.ndarray) -> np.ndarray:
        """Each row's scenario name, or None outside every planted slice: (N,) object."""
        return self.scenario[self.rows(ids)]

    def present_of(self, ids: np.ndarray) -> np.ndarray:
        """Which attribute values each row carries: (N, C) bool over ``concepts``."""
        return self.present[self.rows(ids)]


def truth_heatmap(present: np.ndarray, labels: np.ndarray, predictions: np.ndarray, classes: list[str],
                  concepts: list[str], alpha: float = 0.05) -> pa.Table:
    """The ground-truth risk-ratio heatmap, one row per (class, concept), class-major.

    ``present``: (N, C) bool; ``labels``, ``predictions``: (N,) int indices into ``classes``. Columns:
    ``class, concept, failed_present, n_present, failed_absent, n_absent`` (counts of the class's rows),
    ``rate_present, rate_absent``, ``value`` (log ratio, +0.5 smoothed), ``p`` (Fisher; NaN where the class
    lacks failures or correct rows), ``q`` (BH over the cells, a two-valued group's second value not counted as a
    test of its own: its rows are the first value's absent rows, so its q is the first value's), ``significant``
    (q < alpha)."""
    present = np.asarray(present, bool)
    failed = np.asarray(labels) != np.asarray(predictions)
    k, c = len(classes), len(concepts)
    one_hot = np.eye(k, dtype=np.int64)[np.asarray(labels)]  # (N, K)
    a = one_hot[failed].T @ present[failed].astype(np.int64)  # failed, present: (K, C)
    b = one_hot[~failed].T @ present[~failed].astype(np.int64)  # correct, present
    n_bad, n_good = one_hot[failed].sum(0)[:, None], one_hot[~failed].sum(0)[:, None]
    cc, d = n_bad - a, n_good - b  # failed, absent; correct, absent
    sa, sb, sc, sd = a + 0.5, b + 0.5, cc + 0.5, d + 0.5
    value = np.log(sa / (sa + sb)) - np.log(sc / (sc + sd))
    p = np.full((k, c), np.nan)
    for i, j in zip(*np.nonzero((n_bad > 0) & (n_good > 0) & np.ones((k, c), bool))):
        p[i, j] = stats.fisher_exact([[a[i, j], b[i, j]], [cc[i, j], d[i, j]]])[1]
    q = bh_qvalues(p, two_valued(concepts))
    with np.errstate(invalid="ignore", divide="ignore"):
        rate_present, rate_absent = a / (a + b), cc / (cc + d)
    return pa.table({
        "class": [cls for cls in classes for _ in concepts], "concept": list(concepts) * k,
        "failed_present": a.ravel(), "n_present": (a + b).ravel(), "failed_absent": cc.ravel(),
        "n_absent": (cc + d).ravel(), "rate_present": rate_present.ravel(), "rate_absent": rate_absent.ravel(),
        "value": value.ravel(), "p": p.ravel(), "q": q.ravel(),
        "significant": np.nan_to_num(q, nan=1.0).ravel() < alpha,
    })
