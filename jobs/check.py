"""conceptlens check: the preflight, alone: do these models and this data go together?

Loads the classifier and the VLM of the run's config, runs ``check.rows`` sampled labelled rows through them
(the decode path of ``embed``, no Ray) and stops with one line for what it can name: a checkpoint that does not
fit the config (the shapes and the key to set), a preprocessing other than the one the classifier was trained
with (its accuracy under each common preprocessing and the setting that fixes it), a permuted class order (the
order to set). It warns about a classifier near chance, a VLM that does not know the classes, unreadable images
and files that are not images. ``embed`` runs the same preflight first. Writes ``<run>/check/metrics.json``.
"""
from __future__ import annotations

import sys
from typing import Sequence

from conceptlens.cli import run_command
from conceptlens.config import Config
from conceptlens.jobs.embed import load_input
from conceptlens.pipeline.datasets import classes_of, skipped_files
from conceptlens.pipeline.preflight import run_preflight
from conceptlens.pipeline.runs import command_dir, write_metrics


def run(cfg: Config) -> dict:
    if cfg.check.rows <= 0:
        raise ValueError(f"check.rows={cfg.check.rows}: the preflight needs at least one row")
    table = load_input(cfg)
    found = run_preflight(cfg, table, classes_of(table))
    metrics = found.as_dict() | {"skipped_files": skipped_files(table)}
    write_metrics(command_dir(cfg.run, "check"), metrics)
    return metrics


def report(metrics: dict) -> str:
    lines = [f"preflight passed: classifier accuracy {metrics['accuracy']:.2f} on {metrics['rows']} labelled rows "
             f"(chance {metrics['chance']:.2f}) with classifier.preprocess={metrics['preprocess']}"]
    if metrics["vlm_zero_shot"] is not None:
        lines.append(f"VLM zero-shot accuracy {metrics['vlm_zero_shot']:.2f}")
    lines += [f"warning: {w}" for w in metrics["warnings"]]
    if metrics["skipped_files"]:
        lines.append(f"not images, left out: {', '.join(metrics['skipped_files'][:5])}"
                     f"{' …' if len(metrics['skipped_files']) > 5 else ''}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    return run_command("check", __doc__, argv, run, report)


if __name__ == "__main__":
    sys.exit(main())
