"""conceptlens embed: the embeddings table, one row per image, sharded over Ray Data workers.

Reads a manifest or image folder (default: this run's ConceptWorld manifest, its data columns only), decodes
images in CPU tasks, runs the classifier and the VLM in an actor pool, and writes
``<run>/embed/embeddings/part-*.parquet`` (a Parquet dataset) plus ``rejects/`` for images
that could not be read. A re-run resumes: finished shards are skipped. Rows without a split get
``calib`` or ``test`` from a hash of their id (``data.calib_share``). ``<run>/embed/inputs.json``
records the models and data used; the commands after ``embed`` take them from there.
``<run>/embed/predictions.parquet`` (test rows: id, path, image content digest, label, prediction) is logged to
MLflow beside them, so that ``compare`` can pair two runs' rows that are the same images.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from conceptlens.cli import run_command
from conceptlens.config import Config
from conceptlens.pipeline.datasets import COLUMNS, classes_of, read_dataset, skipped_files
from conceptlens.pipeline.preflight import run_preflight
from conceptlens.pipeline.predictions import PREDICTIONS, write_predictions
from conceptlens.pipeline.raydata import embed_table, init_ray
from conceptlens.pipeline.runs import (Progress, command_dir, log, model_spec, record_inputs, world_dir,
                                       write_metrics)
from conceptlens.pipeline.shards import ShardPlan, batch_to_table, made_from, write_atomic
from conceptlens.pipeline.tracking import log_results, mlflow_run


def input_source(cfg: Config) -> Path:
    """What ``embed`` reads: ``data.source``, else this run's ConceptWorld manifest."""
    if cfg.data.source:
        return Path(cfg.data.source)
    manifest = world_dir(cfg) / "manifest.parquet"
    if not manifest.is_file():
        raise ValueError(f"no data.source given and no ConceptWorld manifest at {manifest}; "
                         f"run `conceptlens world` first or set data.source=PATH")
    return manifest


def load_input(cfg: Config) -> pa.Table:
    """The rows to embed (:func:`input_source`; rows without a split get one from their id,
    ``data.calib_share``); only ``data.splits``. A source's other columns pass through, except on this run's
    ConceptWorld, whose manifest states its classes and whose rows pass nothing else on (the world's truth lies
    beside the manifest, never in the embeddings table, even in a run folder written before it had its own file)."""
    table = read_dataset(input_source(cfg), classes=cfg.data.classes, calib_share=cfg.data.calib_share)
    if not cfg.data.source:
        table = table.select(list(COLUMNS))
    if cfg.data.splits:
        present = sorted(set(table.column("split").to_pylist()))
        table = table.filter(pc.is_in(table.column("split"), pa.array(cfg.data.splits)))
        if table.num_rows == 0:
            raise ValueError(f"no rows of data.splits={cfg.data.splits} to embed; the data has splits {present}")
    return table


def embed(cfg: Config) -> dict:
    """Embed this run's input (see :func:`load_input`) into ``<run>/embed/`` and record there what it was
    made from (``inputs.json``, :func:`~conceptlens.pipeline.runs.run_inputs`). The preflight
    (:mod:`conceptlens.pipeline.preflight`, ``check.rows`` rows) runs first, before Ray starts."""
    table = load_input(cfg)
    skipped = skipped_files(table)
    if skipped:
        log(f"embed: left out {len(skipped)} file(s) that are not images: {', '.join(skipped[:5])}"
            f"{' …' if len(skipped) > 5 else ''}")
    found = run_preflight(cfg, table, classes_of(table)) if cfg.check.rows else None
    out = command_dir(cfg.run, "embed")
    metrics = embed_rows(cfg, table, out)
    metrics |= {"accuracy": accuracy_by_split(out / "embeddings"), "skipped_files": skipped,
                "preflight": found.as_dict() if found else None}
    write_metrics(out, metrics)
    record_inputs(out, cfg, model_spec(cfg), input_source(cfg), classes_of(table))
    return metrics


def accuracy_by_split(folder: Path) -> dict[str, float]:
    """The classifier's accuracy against the labels, per split and ``all``, of an embeddings table."""
    rows = pq.read_table(folder, columns=["split", "label_index", "prediction"]).to_pandas()
    hits = rows["label_index"] == rows["prediction"]
    return {"all": float(hits.mean())} | {str(k): float(v) for k, v in hits.groupby(rows["split"]).mean().items()}


def embed_rows(cfg: Config, table: pa.Table, out: Path, what: str = "embed") -> dict:
    """Embed every pending shard of ``table`` into ``out/embeddings`` (rejects in ``out/rejects``);
    write and return the metrics of the whole table. A folder made from other models, image size or
    rows is refused (``ValueError``); rows that do not fill the shards exactly raise ``IncompleteShards``."""
    spec = model_spec(cfg)
    plan = ShardPlan(out / "embeddings", table.column("id").to_pylist(), cfg.embed.shard_size,
                     made_from(spec.fingerprint(), cfg.data.image_size, table))
    rejects_dir = out / "rejects"
    rejects_dir.mkdir(exist_ok=True)
    pending = plan.pending()
    log(f"{what}: {table.num_rows} rows in {plan.count} shards, {len(pending)} to do")
    progress = Progress(what, sum(plan.size(k) for k in pending))
    if pending:
        init_ray(cfg.ray)
        todo = pa.concat_tables([table.slice(a, b - a) for a, b in map(plan.rows, pending)])
        batches = embed_table(todo, spec, cfg.embed, image_size=cfg.data.image_size, device=cfg.run.device)
        with progress:  # a line every 10 s even while the model actors start
            for shard, rows in plan.assemble(pending, _counted(batches, table.schema, progress)):
                _write_shard(plan, rejects_dir, shard, rows)
    seconds, done = time.time() - progress.start, progress.done
    rows = pq.read_table(plan.folder, columns=["node_id"]).column("node_id")
    rejected = (pads.dataset(rejects_dir, format="parquet").to_table(columns=["path"]).column("path").to_pylist()
                if any(rejects_dir.glob("*.parquet")) else [])
    metrics = {"rows": len(rows), "rejects": len(rejected), "rejected": rejected[:20],
               "input_rows": table.num_rows, "shards": plan.count, "shards_this_run": len(pending),
               "rows_this_run": done, "seconds": seconds, "rows_per_second": done / seconds if done else None,
               "nodes": len(pc.unique(rows)),
               "output": str(plan.folder.resolve()), "classes": classes_of(table)}
    write_metrics(out, metrics)
    return metrics


def _counted(batches: Iterable[dict], schema: pa.Schema, progress: Progress) -> Iterator[pa.Table]:
    """The embedded batches as Arrow tables (``schema``'s types), counted into ``progress``."""
    for batch in batches:
        yield batch_to_table(batch, schema)
        progress.update(len(batch["id"]))


def _write_shard(plan: ShardPlan, rejects_dir: Path, shard: int, rows: pa.Table) -> None:
    failed = pc.not_equal(rows.column("error"), "")
    write_atomic(rows.filter(failed).select(["id", "path", "error"]), rejects_dir / plan.path(shard).name)
    write_atomic(rows.filter(pc.invert(failed)).drop_columns(["error"]), plan.path(shard))  # last: marks done


def run(cfg: Config) -> dict:
    with mlflow_run(cfg, "embed"):
        metrics = embed(cfg)
        out = command_dir(cfg.run, "embed")
        write_predictions(out / "embeddings", out / PREDICTIONS)
        log_results(metrics, out / "metrics.json", out / "inputs.json", out / "rejects", out / PREDICTIONS,
                    tags={"output": metrics["output"]})
    return metrics


def report(metrics: dict) -> str:
    lines = [f"embedded {metrics['rows']} rows ({metrics['rejects']} rejected) into {metrics['output']}"]
    if metrics.get("rejected"):
        lines.append("rejected (unreadable): " + ", ".join(metrics["rejected"][:5]) + (" …" if metrics["rejects"] > 5
                     else "") + f" (all: {Path(metrics['output']).parent / 'rejects'})")
    if metrics.get("accuracy"):
        lines.append("classifier accuracy against the labels: "
                     + ", ".join(f"{k} {v:.3f}" for k, v in metrics["accuracy"].items()))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    return run_command("embed", __doc__, argv, run, report)


if __name__ == "__main__":
    sys.exit(main())
