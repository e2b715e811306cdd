"""conceptlens world: build ConceptWorld, train (or reuse) its classifier and tiny CLIP, and report how they do.

Writes ``<run>/world/manifest.parquet`` (absolute image paths, ready for ``embed``), ``truth.parquet`` beside it
(each row's scenario, caption and attributes, for ``evaluate`` alone), ``models.json`` (checkpoints) and
``metrics.json``; prints the planted slices' accuracy
and the tiny CLIP's zero-shot accuracy and attribute retrieval. Fails (exit 1, after writing
them) when a scenario's slice gap on test stays under 0.20, unless ``world.allow_unplanted=true``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Sequence

import pyarrow.parquet as pq

from conceptlens.cli import ChecksFailed, run_command
from conceptlens.config import Config, to_dict
from conceptlens.evaluation.world_models import evaluate_models, unplanted_message
from conceptlens.recipes.conceptworld import ensure_classifier, ensure_vlm, ensure_world, scenarios_of
from conceptlens.models.device import resolve_device
from conceptlens.pipeline.runs import command_dir, log, write_metrics
from conceptlens.pipeline.tracking import log_results, mlflow_run
from conceptlens.world import read_manifest, read_truth


def build(cfg: Config) -> dict:
    """Build or reuse the world and its models, evaluate them, write the run folder; return the metrics."""
    out = command_dir(cfg.run, "world")
    device = resolve_device(cfg.run.device)
    world = ensure_world(cfg, log)
    classifier = ensure_classifier(cfg, world, device, log)
    vlm = ensure_vlm(cfg, world, device, log)
    log("evaluating on the test split")
    metrics = evaluate_models(cfg, world, classifier, vlm, device, log=log)
    pq.write_table(read_truth(world), out / "truth.parquet")
    pq.write_table(read_manifest(world), out / "manifest.parquet")
    (out / "models.json").write_text(json.dumps(
        {"world": str(world.resolve()), "classifier": str(Path(classifier).resolve()),
         "vlm": str(Path(vlm).resolve()) if vlm and Path(vlm).is_file() else vlm, "device": str(device)},
        indent=2))
    (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=2))
    write_metrics(out, metrics)
    return metrics


def summary(metrics: dict) -> str:
    c, v = metrics["classifier"], metrics["vlm"]
    lines = [f"classifier accuracy {c['accuracy']:.3f} (outside planted slices {c['accuracy_rest']:.3f}, n={c['n']})",
             f"{'planted slice':<22}{'n':>6}{'accuracy':>10}{'gap':>8}"]
    lines += [f"{name:<22}{s['n']:>6}{s['accuracy']:>10.3f}{s['gap']:>8.3f}" for name, s in c["slices"].items()]
    worst = sorted(v["attribute_auroc"].items(), key=lambda kv: kv[1])[:3]
    planted = v["planted_attribute_auroc_min"]
    lines += [f"tiny CLIP zero-shot class accuracy {v['zero_shot_accuracy']:.3f}; attribute AUROC: "
              f"{'' if planted is None else f'planted min {planted:.3f}, '}"
              f"lowest {', '.join(f'{k} {a:.3f}' for k, a in worst)}"]
    lines += [f"check {name}: {'ok' if ok else 'FAILED'}" for name, ok in metrics["checks"].items()]
    return "\n".join(lines)


def run(cfg: Config) -> dict:
    """``build`` inside an MLflow run that records the config, the metrics and the run folder.
    :class:`~conceptlens.cli.ChecksFailed` (the MLflow run marked failed) when a scenario planted no failure,
    unless ``world.allow_unplanted``."""
    with mlflow_run(cfg, "world"):
        metrics = build(cfg)
        log_results(metrics, command_dir(cfg.run, "world"))
        unplanted = unplanted_message(metrics["classifier"]["slices"], scenarios_of(cfg), split=metrics["split"])
        if unplanted and not cfg.world.allow_unplanted:
            raise ChecksFailed(unplanted, metrics)
    if unplanted:
        log(f"going on, as world.allow_unplanted says: {unplanted}")
    return metrics


def main(argv: Sequence[str] | None = None) -> int:
    return run_command("world", __doc__, argv, run, summary)


if __name__ == "__main__":
    sys.exit(main())
