"""The run report: read one run folder's outputs section by section and render them as one self-contained HTML
page (``report.html.j2``). A section is present only when its command ran (its output folder exists); a
command that did not run is no error, only a missing section."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from conceptlens.pipeline.runs import log
from conceptlens.report.attack_examples import attacks
from conceptlens.report.causes import root_causes
from conceptlens.report.heatmaps import semantic
from conceptlens.report.neuron_cards import neurons, repair
from conceptlens.report.outputs import read_json
from conceptlens.report.overview import classes_of, overview
from conceptlens.report.page import render
from conceptlens.report.runtime_filter import runtime_filter
from conceptlens.report.svg import PALETTE, line_chart


def scorecard(run: Path) -> dict | None:
    """The scorecard's goals as rows (from the evaluation wing), None without ``evaluate/scorecard.json``."""
    card = read_json(run / "evaluate" / "scorecard.json")
    if card is None:
        return None
    from conceptlens.evaluation.summary import scorecard_summary

    summary = scorecard_summary(card)
    summary["figures"] = [scatter(plot) for plot in summary.pop("plots")]
    return summary


def scatter(plot: dict):
    """A scatter of ``{"title", "xlabel", "ylabel", "points": [{"label", "x", "y", "flagged"}]}`` on [0.4, 1] ×
    [0, 1], flagged points red."""
    return line_chart([], title=plot["title"], xlabel=plot["xlabel"], ylabel=plot["ylabel"], x_range=(0.4, 1.0),
                      y_range=(0.0, 1.0), marks=[{"label": p["label"], "x": max(p["x"], 0.4), "y": p["y"],
                                                   "colour": PALETTE[1] if p["flagged"] else PALETTE[0]}
                                                  for p in plot["points"]])


# id, title, the command whose folder it reads, builder(run) -> content or None
SECTIONS: list[tuple[str, str, str, Callable[[Path], dict | None]]] = [
    ("overview", "The model and data at a glance", "embed", overview),
    ("scorecard", "Scorecard: the diagnoses checked", "evaluate", scorecard),
    ("semantic", "Concepts that go with failure", "analyze", semantic),
    ("rootcause", "Root causes of the failures", "rootcause", root_causes),
    ("neurons", "Neurons behind the mistakes", "neurons", neurons),
    ("repair", "The mitigation: before and after", "neurons", repair),
    ("filter", "The runtime filter", "monitor", runtime_filter),
    ("attacks", "Adversarial attacks", "attack", lambda run: attacks(run, classes_of(run))),
]


def build_report(run: Path) -> tuple[str, list[dict]]:
    """The page of the run folder ``run`` and its sections ``[{"id", "title", "command", "seconds"}]`` in page
    order. Raises FileNotFoundError when ``run`` is not a folder."""
    run = Path(run)
    if not run.is_dir():
        raise FileNotFoundError(f"no run folder {run}: run a command first (e.g. `conceptlens demo`)")
    sections, skipped = [], []
    for section_id, title, command, builder in SECTIONS:
        start = time.time()
        content = builder(run)
        if content is None:
            skipped.append(command)
            log(f"report: {section_id}: no section (`{command}` has not run)")
            continue
        seconds = time.time() - start
        sections.append({"id": section_id, "title": title, "command": command, "data": content,
                         "seconds": round(seconds, 2)})
        log(f"report: {section_id}: {title.lower()} ({seconds:.1f} s)")
    not_run = sorted(set(skipped) - {s["command"] for s in sections}
                     - (set() if (run / "world").is_dir() else {"evaluate"}))  # own data: nothing to score against
    html = render("report.html.j2", run=run.name, folder=str(run.resolve()), sections=sections, not_run=not_run,
                  created=time.strftime("%Y-%m-%d %H:%M"))
    return html, [{k: s[k] for k in ("id", "title", "command", "seconds")} for s in sections]
