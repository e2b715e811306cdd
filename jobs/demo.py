"""conceptlens demo: the whole pipeline on ConceptWorld, then a summary of what it found and where it is.

Steps so far: build ConceptWorld and train (or reuse) its classifier and tiny CLIP (`world`),
embed the held-out splits (`embed`), heatmaps and fault localisation (`analyze`), adversarial
inputs (`attack`), cluster the failures into root causes (`rootcause`), describe each in validated sentences
(`explain`), calibrate and evaluate the runtime filter, whose alerts name those failure modes, attack it
white-box, and register it (`monitor`), find the neurons
behind each class's mistakes and repair the head (`neurons`), score every diagnosis against the world's truth
(`evaluate`), and last write the run's HTML report (`report`: ``<run>/report/index.html``, one self-contained
page). The demo's last output line is ``report: <absolute path of that page>``.
Runs under ``runs/demo/`` unless ``run.name`` says otherwise; every step is a child of the run's pipeline run
in the MLflow store shared by all runs under ``run.root`` (``runs/mlflow.db``).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Sequence

from conceptlens.cli import ChecksFailed, parse_config, report_failure
from conceptlens.evaluation.world_models import GAP_CHECK
from conceptlens.jobs import analyze, attack, embed, evaluate, explain, monitor, neurons, report, rootcause, world
from conceptlens.pipeline.tracking import tracking_uri, ui_command


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_config("demo", __doc__, argv)
    if cfg.run.name == "default":
        cfg.run.name = "demo"
    start = time.time()
    try:
        world_metrics = world.run(cfg)
    except ChecksFailed as err:  # nothing after `world` is worth running on a world without its failures
        report_failure("demo", err, world.summary)
        return 1
    embed_metrics = embed.run(cfg)
    analysis = analyze.run(cfg)
    attacks = attack.run(cfg)
    causes = rootcause.run(cfg)
    sentences = explain.run(cfg)
    filter_metrics = monitor.run(cfg)  # after rootcause and explain: its alerts name their failure modes
    repaired = neurons.run(cfg)
    scorecard = evaluate.run(cfg)
    page = report.run(cfg)
    run = Path(cfg.run.root) / cfg.run.name
    print("\n=== ConceptLens demo ===")
    print(world.summary(world_metrics))
    print(f"embeddings table: {embed_metrics['rows']} rows ({embed_metrics['rejects']} rejected), "
          f"{embed_metrics['rows_per_second'] or 0:.0f} rows/s this run")
    print(analyze.report(analysis))
    print(attack.report(attacks))
    print(rootcause.report(causes))
    print(explain.report(sentences))
    print(monitor.report(filter_metrics))
    print(neurons.report(repaired))
    print(evaluate.report(scorecard))
    print(f"\nfinished in {(time.time() - start) / 60:.1f} min; outputs under {run.resolve()}:")
    for path in sorted(run.glob("*/*")):
        print(f"  {path}")
    print(f"MLflow (run '{cfg.run.name}' and its steps): {ui_command(tracking_uri(cfg))}")
    print(f"report: {page['path']}")  # the last line: where to look
    excused = {GAP_CHECK} if cfg.world.allow_unplanted else set()
    return 0 if all(ok for name, ok in world_metrics["checks"].items() if name not in excused) else 1


if __name__ == "__main__":
    sys.exit(main())
