"""conceptlens compare RUN_A RUN_B: what changed between two runs, read from MLflow.

RUN_A and RUN_B are each a run name, an MLflow run id (of a pipeline run or of any command below one), or a
registered model version: models:/<name>/<version> or models:/<name>@<alias>. A filter version (registered by
`monitor`) stands for the run that registered it; a classifier version (registered by `neurons`, base and
repaired alike) for the newest run whose classifier is that version (`conceptlens.classifier_hash`), preferring
one with a scorecard.

Compared, B against A: the classifier's accuracy, overall and per planted slice; the concepts blamed per class
that appeared or disappeared; root causes matched by their concepts and sentences, as fixed / persisting / new;
the runtime filter's AUROCs and threshold drift; the scorecard's goals. Every number has an interval
(compare.confidence; simultaneous within a section by Bonferroni, compare.simultaneous). Where the two runs
classified the same images (same id, label and image content, from `embed`'s per-row predictions) the tests are
paired: McNemar for the accuracy, DeLong for the filter's overall misclassification AUROC (where `evaluate`
logged per-row filter scores and both classifiers err on the same rows), significant when the interval on the
difference excludes 0. Elsewhere (other rows, the planted slices, whose membership is ground truth) a change is
called significant only when the two runs' intervals do not overlap. compare.json names the test of each number.
Everything is read from MLflow (metrics and artifacts), so the store may be a server elsewhere
(mlflow.tracking_uri; default the store under run.root).

Writes <run.root>/compare/<A>__vs__<B>/index.html (one self-contained page) and compare.json (compare.output
overrides the folder), prints a summary, and logs both to MLflow as the run `compare/<A>__vs__<B>`, tagged
conceptlens.kind=compare with both pipeline run ids: a top-level run of the experiment, since it belongs to both
runs (nested under one, the other would not show it).

  conceptlens compare demo repaired run.root=runs
  conceptlens compare models:/conceptlens-demo-classifier@base models:/conceptlens-demo-classifier@repaired
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from conceptlens.config import Config, ConfigError, load_config, to_dict
from conceptlens.pipeline.runs import log
from conceptlens.pipeline.tracking import experiment_id, tracking_uri
from conceptlens.report.compare import compare_outputs
from conceptlens.report.compare_page import render_page, summary_text
from conceptlens.report.compare_runs import client_for, fetch, resolve
from conceptlens.report.page import write_page

KIND = "compare"  # the value of the tag conceptlens.kind of a comparison's MLflow run


def folder_name(a: str, b: str) -> str:
    """``<A>__vs__<B>`` with anything but letters, digits, ``.``, ``-`` and ``_`` replaced (names become paths)."""
    def safe(name: str) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip(".") or "_"

    return f"{safe(a)}__vs__{safe(b)}"


def _clean(value):
    """NaN and infinities as null, so compare.json is valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def counts(result: dict) -> dict[str, float]:
    """The comparison's numbers logged as MLflow metrics."""
    verdicts = [r["verdict"] for r in result["slices"].get("rows", [])]
    causes, blamed, goals = result["causes"], result["blamed"].get("counts", {}), result["goals"].get("counts", {})
    out = {"significant_changes": len(result["significant"]),
           **{f"slices_{v}": verdicts.count(v) for v in ("fixed", "reduced", "worse")},
           **{f"blamed_{k}": n for k, n in blamed.items()},
           **{f"goals_{k.replace(' ', '_')}": n for k, n in goals.items()},
           "thresholds_drifted": sum(t["drift"] for t in result["filter"].get("thresholds", []))}
    if "persisting" in causes:
        out |= {f"causes_{k}": len(causes[k]) for k in ("fixed", "persisting", "new")}
    if result["accuracy"].get("delta") is not None:
        out["accuracy_delta"] = result["accuracy"]["delta"]
    if result["accuracy"].get("paired"):
        out |= {"accuracy_p": result["accuracy"]["p"], "rows_paired": result["accuracy"]["rows_paired"]}
    return {k: float(v) for k, v in out.items()}


def write_and_log(cfg: Config, uri: str, result: dict, folder: Path) -> dict:
    """Write ``index.html`` and ``compare.json`` to ``folder`` and log both to MLflow as a top-level run tagged
    ``conceptlens.kind=compare`` (its id is ``mlflow_run_id`` in both)."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    a, b = result["a"], result["b"]
    tags = {"conceptlens.kind": KIND, "conceptlens.compare.a": a["name"], "conceptlens.compare.b": b["name"],
            "conceptlens.compare.a_run_id": a["run_id"], "conceptlens.compare.b_run_id": b["run_id"],
            "conceptlens.compare.a_ref": a["ref"][:500], "conceptlens.compare.b_ref": b["ref"][:500]}
    folder.mkdir(parents=True, exist_ok=True)
    with mlflow.start_run(experiment_id=experiment_id(cfg.mlflow.experiment, uri), run_name=f"compare/{folder.name}",
                          tags=tags) as run:
        result = result | {"mlflow_run_id": run.info.run_id, "page": str((folder / "index.html").resolve())}
        write_page(render_page(result), folder / "index.html")
        (folder / "compare.json").write_text(json.dumps(result, indent=1, allow_nan=False))
        mlflow.log_params({f"compare.{k}": str(v) for k, v in to_dict(cfg.compare).items()})
        mlflow.log_metrics(counts(result))
        mlflow.log_artifact(str(folder / "compare.json"))
        mlflow.log_artifact(str(folder / "index.html"))
    log(f"compare: logged to MLflow run {run.info.run_id} (tag conceptlens.kind={KIND})")
    return result


def run(cfg: Config, ref_a: str, ref_b: str) -> dict:
    """Resolve both references, download their outputs, compare, write the page and compare.json, log them."""
    uri = tracking_uri(cfg)
    client = client_for(uri)
    refs = [resolve(client, uri, ref, cfg.mlflow.experiment) for ref in (ref_a, ref_b)]
    for side, ref in zip("AB", refs):
        log(f"compare: {side} = {ref.how}")
    with tempfile.TemporaryDirectory(prefix="conceptlens-compare-") as tmp:
        a, b = (fetch(client, uri, ref, cfg.compare.source, Path(tmp) / side) for side, ref in zip("ab", refs))
        result = _clean(compare_outputs(a, b, cfg.compare))
    folder = Path(cfg.compare.output) if cfg.compare.output else \
        Path(cfg.run.root) / "compare" / folder_name(refs[0].name, refs[1].name)
    return write_and_log(cfg, uri, result, folder)


def parse(argv: Sequence[str] | None) -> tuple[Config, str, str]:
    """``RUN_A RUN_B [--config FILE] [key=value ...]`` (in any order: an argument with ``=`` is an override)."""
    parser = argparse.ArgumentParser(prog="conceptlens compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", default=[], metavar="FILE",
                        help="YAML config file; repeat to layer several (later wins)")
    parser.add_argument("items", nargs="*", metavar="RUN_A RUN_B [key=value ...]",
                        help="the two runs (name, MLflow run id or models:/...), then config overrides")
    args = parser.parse_intermixed_args(argv)
    refs = [i for i in args.items if "=" not in i or i.startswith("models:/")]
    overrides = [i for i in args.items if i not in refs]
    if len(refs) != 2:
        parser.exit(2, f"conceptlens compare: give two runs (RUN_A RUN_B), got {len(refs)}: {refs}\n")
    try:
        return load_config(args.config, overrides), refs[0], refs[1]
    except (ConfigError, ValueError) as err:
        parser.exit(2, f"conceptlens compare: config error: {err}\n")


def main(argv: Sequence[str] | None = None) -> int:
    cfg, ref_a, ref_b = parse(argv)
    try:
        result = run(cfg, ref_a, ref_b)
    except (ValueError, FileNotFoundError) as err:
        print(f"conceptlens compare: {err}", file=sys.stderr)
        return 2
    print(summary_text(result, result["page"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
