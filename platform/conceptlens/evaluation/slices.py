"""The numbers of a scorecard that two runs are compared on (``conceptlens compare``), read here so that only the
evaluation wing knows the scorecard's truth-keyed layout.

:func:`scorecard_numbers` turns ``evaluate/scorecard.json`` into plain rows: the classifier's test accuracy, each
planted slice's accuracy (with its row count, for an interval), the runtime filter's AUROC per slice with the
counts of defective and correct rows, and the fidelity goals.
"""
from __future__ import annotations

SLICES = "scenarios"  # the scorecard's per-slice sections


def _slice_row(name: str, s: dict) -> dict:
    return {"name": name, "kind": s.get("kind"), "classes": list(s.get("classes") or []),
            "attribute": s.get("attribute"), "n": s.get("n"), "accuracy": s.get("accuracy"), "gap": s.get("gap"),
            "planted": bool(s.get("planted"))}


def _filter_row(name: str, s: dict) -> dict:
    n, defective = s.get("n"), s.get("n_defective")
    correct = n - defective if isinstance(n, int) and isinstance(defective, int) else None
    return {"name": name, "auroc": s.get("auroc"), "n_pos": defective, "n_neg": correct, "flagged": s.get("flagged")}


def scorecard_numbers(card: dict) -> dict:
    """``{"run", "accuracy": {"value", "n", "rows"}, "min_gap", "slices": [row...], "filter": [row...], "goals"}``
    from a scorecard (``evaluate``'s ``scorecard.json``). A slice row: ``name, kind, classes, attribute, n,
    accuracy, gap, planted``; a filter row (the filter's misclassification AUROC on test, overall and per slice):
    ``name, auroc, n_pos`` (errors) ``, n_neg`` (correct rows) ``, flagged``. Sections the run lacks are empty."""
    world = card.get("world") or {}
    runtime = (card.get("runtime") or {}).get(SLICES) or {}
    return {"run": card.get("run"),
            "accuracy": {"value": world.get("accuracy"), "n": world.get("n"), "rows": "test"},
            "min_gap": world.get("min_gap"),
            "slices": [_slice_row(name, s) for name, s in (world.get(SLICES) or {}).items()],
            "filter": [_filter_row(name, s) for name, s in runtime.items()],
            "goals": dict(card.get("goals") or {})}
