"""The truth a run is scored against: which slice each row belongs to, which attribute values it carries, and the
ground-truth risk-ratio heatmap that ``analyze``'s ``risk_ratio`` heatmap is scored against.

Every truth is a table with an id column and attribute columns, declared the same way (:class:`Truth`,
:meth:`Truth.from_table`): exclusive groups (a column whose value is one of the group's values; the concepts
``group=value``), free-standing concepts (a boolean column each) and the failure slices to score (:class:`Slice`).
Two providers fill it in: a ConceptWorld run (:meth:`Truth.of_world`: its ``truth.parquet``, its attribute groups,
its scenarios) and a user's own annotated data (:meth:`Truth.declared`, ``evaluate.truth``). The analyses never
read either.

The heatmap uses the same statistics as the analysis (:mod:`conceptlens.semantic`): per class and
attribute value the 2×2 table present/absent × failed/correct, the log of the failure rate with the
value present over the rate with it absent (+0.5 smoothing), Fisher's exact test where the class has
both failures and correct rows, Benjamini–Hochberg across all cells; only the presence comes from
the truth's attributes instead of concept scores.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, is_dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy import stats

from conceptlens.models import two_valued
from conceptlens.pipeline.stats import bh_qvalues
from conceptlens.world import ATTRIBUTE_GROUPS, Scenario, read_truth
from conceptlens.world.scenarios import KINDS

NO_TRUTH = ("evaluate needs a truth: a ConceptWorld run, or your own attribute table declared as "
            "evaluate.truth.table; this run has neither")
FAULT_SITES = ("encoder", "head")
WORLD_SOURCE = "the world's truth"  # how a scorecard names a ConceptWorld truth


def concept_names() -> list[str]:
    """The world's attribute values as concept names, ``group=value`` (the ``conceptworld`` concept set)."""
    return [f"{g.name}={v}" for g in ATTRIBUTE_GROUPS for v in g.values]


def two_valued_partner(concept: str, concepts: Sequence[str]) -> str | None:
    """The other value of a two-valued group among ``concepts`` (``lighting=dark`` -> ``lighting=bright``), else
    None: for such a group "dark present" and "bright absent" are the same rows."""
    names = list(concepts)
    pairs = two_valued(names)
    for second, first in pairs.items():
        if concept in (names[first], names[second]):
            return names[second] if concept == names[first] else names[first]
    return None


@dataclass(frozen=True)
class Slice:
    """A failure slice the truth scores: a planted scenario of a world, or a slice a user knows of in their data.

    ``kind``: one of the four scenario kinds (:data:`~conceptlens.world.scenarios.KINDS`). Its rows: the
    ``classes``' rows with ``attribute`` present, or for a ``spurious_correlation`` those *without* it (the model
    learnt to expect it) and, with ``both_sides``, the other classes' rows *with* it. ``fault_site``: ``encoder`` or
    ``head`` where known (fault localisation is scored on it), else None. ``partner``: the other value of a
    two-valued group (naming it the other way round names the same cause)."""
    name: str
    kind: str
    classes: tuple[str, ...]
    attribute: str
    both_sides: bool = False
    fault_site: Optional[str] = None
    partner: Optional[str] = None

    @classmethod
    def of(cls, scenario: Scenario) -> "Slice":
        return cls(scenario.name, scenario.kind, tuple(scenario.classes), scenario.attribute, scenario.both_sides,
                   scenario.fault_site, scenario.partner)

    def rows(self, labels: np.ndarray, has_value: np.ndarray) -> np.ndarray:
        """``bool (N,)``: the slice's rows, from each row's class (``labels``, None where unknown) and whether it
        carries the attribute."""
        own = np.isin(labels, list(self.classes))
        if self.kind != "spurious_correlation":
            return own & has_value
        other_side = ~own & (labels != None) & has_value if self.both_sides else False  # noqa: E711
        return own & ~has_value | other_side


def _column(table: pa.Table, name: str, key: str, where: str) -> pa.ChunkedArray:
    if name not in table.column_names:
        raise ValueError(f"{key}: no column {name!r} in {where} (its columns: {table.column_names[:12]})")
    return table[name]


def _presence(table: pa.Table, groups: Mapping[str, Sequence[str]], free: Sequence[str], where: str,
              key: str) -> tuple[list[str], np.ndarray]:
    """The concepts (``group=value`` per declared value, then each free column) and ``bool (N, C)`` presence."""
    concepts, columns = [], []
    for group, values in groups.items():
        column = pc.cast(_column(table, group, f"{key}.groups.{group}", where), pa.string())
        if stray := sorted(set(pc.unique(column.drop_null()).to_pylist()) - set(values)):
            raise ValueError(f"{key}.groups.{group}: column {group!r} of {where} holds {stray[:5]}, not among "
                             f"the declared values {list(values)}: declare them or correct the data")
        for value in values:
            concepts.append(f"{group}={value}")
            columns.append(pc.fill_null(pc.equal(column, value), False).to_numpy(zero_copy_only=False))
    for name in free:
        column = _column(table, name, f"{key}.free", where)
        if not pa.types.is_boolean(column.type):
            raise ValueError(f"{key}.free: column {name!r} of {where} is {column.type}, not boolean "
                             f"(true where the concept is present)")
        concepts.append(name)
        columns.append(pc.fill_null(column, False).to_numpy(zero_copy_only=False))
    if not concepts:
        raise ValueError(f"{key}: declare the attribute columns (groups: {{column: [values]}} and/or free: "
                         f"[boolean columns]); none are")
    return concepts, np.column_stack(columns).astype(bool)


def _slice(entry: dict, i: int, concepts: list[str], key: str) -> Slice:
    """One declared slice, checked against the scenario kinds, the declared concepts and the fault sites."""
    name = entry.get("name") or f"{key}.slices[{i}]"
    if entry.get("kind") not in KINDS:
        raise ValueError(f"{key}.slices[{i}] ({name}): kind {entry.get('kind')!r} is not one of {KINDS}")
    if entry.get("attribute") not in concepts:
        raise ValueError(f"{key}.slices[{i}] ({name}): attribute {entry.get('attribute')!r} is not a declared "
                         f"concept ({concepts[:8]}{' …' if len(concepts) > 8 else ''})")
    if entry.get("fault_site") not in (None, *FAULT_SITES):
        raise ValueError(f"{key}.slices[{i}] ({name}): fault_site {entry['fault_site']!r} is not one of "
                         f"{FAULT_SITES} (or unset)")
    return Slice(name, entry["kind"], tuple(entry.get("classes") or ()), entry["attribute"],
                 bool(entry.get("both_sides", False)), entry.get("fault_site"),
                 two_valued_partner(entry["attribute"], concepts))


@dataclass
class Truth:
    """The truth of a run's rows: ``ids`` (N,) object, ``scenario`` (N,) object (the slice's name or None),
    ``present`` (N, C) bool over ``concepts``, and the ``scenarios`` (:class:`Slice`) to score."""
    ids: np.ndarray
    scenario: np.ndarray
    present: np.ndarray
    scenarios: list
    concepts: list[str]
    source: str = WORLD_SOURCE  # what the scorecard says it was scored against

    @classmethod
    def from_table(cls, table: pa.Table, *, groups: Mapping[str, Sequence[str]], free: Sequence[str] = (),
                   slices: Sequence[Mapping] = (), id_column: str = "id", labels: Mapping[str, str] | None = None,
                   scenario_column: str | None = None, where: str = "the truth table",
                   key: str = "evaluate.truth", source: str | None = None) -> "Truth":
        """A truth from an attribute table: ``groups`` (column -> its values: one per row, the concepts
        ``column=value``), ``free`` (boolean columns, the concepts their names), ``slices`` (:class:`Slice` fields;
        ``fault_site`` optional). Each row's slice: ``scenario_column`` where the table has one (a world's), else
        the first slice containing it, from its class in ``labels`` (id -> class name; rows without one belong to
        none). Errors name the key and the column."""
        ids = _column(table, id_column, f"{key}.id", where).to_numpy(zero_copy_only=False).astype(str).astype(object)
        concepts, present = _presence(table, groups, free, where, key)
        made = [_slice(dict(entry), i, concepts, key) for i, entry in enumerate(slices)]
        if scenario_column is not None:
            scenario = _column(table, scenario_column, f"{key}.scenario", where).to_numpy(zero_copy_only=False)
        else:
            label = np.array([(labels or {}).get(row_id) for row_id in ids], object)
            scenario = np.full(len(ids), None, object)
            for s in reversed(made):  # the first slice containing a row names it
                scenario[s.rows(label, present[:, concepts.index(s.attribute)])] = s.name
        return cls(ids, np.asarray(scenario, object), present, made, concepts, source or f"{key} ({where})")

    @classmethod
    def of_world(cls, world: Path) -> "Truth":
        """A ConceptWorld's truth, from ``<run>/world/``: ``truth.parquet`` (:func:`~conceptlens.world.read_truth`;
        a run folder written before it existed keeps the truth in its ``manifest.parquet``), its attribute groups and
        the scenarios of ``config.json`` (what ``world`` built). A run without them has no truth:
        FileNotFoundError with :data:`NO_TRUTH`."""
        config = Path(world) / "config.json"
        try:
            table = read_truth(world)
        except FileNotFoundError as err:
            if not Path(world).is_dir():  # a run of one's own data: nothing to run first
                raise FileNotFoundError(f"{NO_TRUTH} (no ConceptWorld in {world})") from None
            raise FileNotFoundError(f"{NO_TRUTH} ({err}: run `conceptlens world` for this run first)") from None
        scenarios = []
        if config.is_file():
            scenarios = [Scenario.from_dict(s) for s in json.loads(config.read_text())["world"]["scenarios"]]
        slices = [vars(Slice.of(s)) for s in scenarios]
        return cls.from_table(table, groups={g.name: list(g.values) for g in ATTRIBUTE_GROUPS}, slices=slices,
                              scenario_column="scenario", where=str(Path(world) / "truth.parquet"), key="world",
                              source=WORLD_SOURCE)

    @classmethod
    def declared(cls, truth, labels: Mapping[str, str]) -> "Truth":
        """A user's truth as ``evaluate.truth`` declares it (``table``: a parquet or CSV file); ``labels``: each
        row's class (id -> name), from the run's embeddings."""
        path = Path(truth.table)
        if not path.is_file():
            raise FileNotFoundError(f"evaluate.truth.table {path} does not exist")
        if path.suffix.lower() == ".csv":
            from pyarrow import csv
            table = csv.read_csv(path, convert_options=csv.ConvertOptions(
                column_types={truth.id: pa.string(), **{g: pa.string() for g in truth.groups}}))
        else:
            import pyarrow.parquet as pq
            table = pq.read_table(path)
        slices = [vars(s) if is_dataclass(s) else dict(s) for s in truth.slices]
        return cls.from_table(table, groups={g: list(v) for g, v in truth.groups.items()}, free=list(truth.free),
                              slices=slices, id_column=truth.id, labels=labels, where=str(path),
                              source=f"the truth of {path.name}")

    def __post_init__(self):
        self._position = {row_id: i for i, row_id in enumerate(self.ids)}

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Positions of ``ids`` in the truth: (N,) int64; ValueError naming an id the truth does not have."""
        missing = [row_id for row_id in ids if row_id not in self._position]
        if missing:
            raise ValueError(f"row id {missing[0]!r} (and {len(missing) - 1} more) is not in this run's truth: "
                             f"every scored row needs one")
        return np.array([self._position[row_id] for row_id in ids], np.int64)

    def scenario_of(self, ids: np.ndarray) -> np.ndarray:
        """Each row's slice name, or None outside every slice: (N,) object."""
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
