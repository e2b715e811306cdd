"""conceptlens report: one self-contained HTML page of a run — what is wrong, why, where, and what to do.

Reads the outputs under ``<run.root>/<run.name>/`` and writes ``report/index.html`` there (images inlined,
no network needed to open it) and ``report/metrics.json`` (``path``, ``sections``, ``bytes``). Sections, each
present only when its command ran: the model and data at a glance (``world``, ``embed``), the scorecard
(``evaluate``), the semantic heatmaps with cell tooltips, the concepts blamed per class and the encoder-vs-head
localisation (``analyze``), root-cause cards with their sentences (``rootcause``, ``explain``), neurons with
their concepts and images and the repaired head's before/after (``neurons``), the runtime filter's AUROCs, ROC
curves and accepted-accuracy trade-off (``monitor``), and attack examples (``attack``). Both files are logged
to the MLflow run ``<run.name>/report``.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from conceptlens.cli import run_command
from conceptlens.config import Config
from conceptlens.pipeline.runs import command_dir, log, write_metrics
from conceptlens.pipeline.tracking import log_results, mlflow_run
from conceptlens.report.build import build_report
from conceptlens.report.page import write_page


def report_run(cfg: Config) -> dict:
    """Build and write the page of ``cfg``'s run folder; its metrics (``path``, ``sections``, ``bytes``)."""
    html, sections = build_report(Path(cfg.run.root) / cfg.run.name)
    out = command_dir(cfg.run, "report")
    path = write_page(html, out / "index.html").resolve()
    metrics = {"path": str(path), "sections": [s["id"] for s in sections], "bytes": path.stat().st_size,
               "section_seconds": {s["id"]: s["seconds"] for s in sections}}
    write_metrics(out, metrics)
    log(f"report: {len(sections)} sections, {path.stat().st_size / 1e6:.2f} MB: {path}")
    return metrics


def run(cfg: Config) -> dict:
    if not (Path(cfg.run.root) / cfg.run.name).is_dir():  # before MLflow: no run folder, no MLflow run
        raise FileNotFoundError(f"no run folder {Path(cfg.run.root) / cfg.run.name}: nothing to report (run "
                                f"`conceptlens demo`, or a command, with run.name={cfg.run.name} first)")
    with mlflow_run(cfg, "report"):
        metrics = report_run(cfg)
        out = Path(metrics["path"]).parent
        log_results({"bytes": metrics["bytes"], "sections": len(metrics["sections"])}, out / "index.html",
                    out / "metrics.json")
    return metrics


def report(metrics: dict) -> str:
    return f"report: {metrics['path']} ({len(metrics['sections'])} sections: {', '.join(metrics['sections'])})"


def main(argv: Sequence[str] | None = None) -> int:
    return run_command("report", __doc__, argv, run, report)


if __name__ == "__main__":
    sys.exit(main())
