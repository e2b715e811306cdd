"""conceptlens analyze: semantic heatmaps, differential heatmaps and encoder-vs-head fault localisation.

Reads the embeddings table (default: this run's ``embed`` output), fits the aligner from the
classifier's encoder space into the VLM image space on ``analyze.fit_split``, scores every
row against the concept set with Ray Data tasks, and streams the scores into heatmaps of
``analyze.splits``. Writes under ``<run>/analyze/``: ``scores.parquet`` (the single-input
heatmap of every row), ``heatmaps_<source>.parquet``, ``faults.parquet``, ``aligner.npz``,
``concepts.json`` and ``concepts.npz`` (text embeddings, z-score statistics), ``probes.json`` (with
``analyze.probes``: each concept's detector calibrated on its probes), ``figures/*.png``,
``summary.json`` and ``metrics.json``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import torch

from conceptlens.semantic.aligner import AlignerFit, HeldOutR2, cross_validated_r2
from conceptlens.semantic.analysis import AnalysisResult, ConceptAnalysis
from conceptlens.semantic.probes import Calibration, calibrate, probe_scores
from conceptlens.semantic.trust import AbsenceCorrelation, GroupDecisiveness, Trust, assess
from conceptlens.cli import run_command
from conceptlens.models.concepts import load_concepts
from conceptlens.config import Config
from conceptlens.models.embedding import VECTOR_COLUMNS
from conceptlens.semantic.heatmaps import matrix
from conceptlens.report.figures import plot_heatmap
from conceptlens.pipeline.datasets import stated_classes
from conceptlens.pipeline.raydata import init_ray, map_parquet
from conceptlens.pipeline.runs import (Progress, command_dir, embeddings_table, log, model_spec, run_inputs,
                                       write_metrics)
from conceptlens.semantic.scoring import SOURCES, ConceptScorer, stack, unit
from conceptlens.pipeline.shards import batch_to_table, vectors
from conceptlens.pipeline.tracking import log_results, mlflow_run

CV_FOLDS = 5  # aligner R² by cross-validation when analyze.fit_split leaves no rows out
# what scoring reads of the embeddings table (the rest, as pass-through columns, stays there); all but the
# vectors go on into scores.parquet
SCORED_COLUMNS = ["id", "path", "split", "label", "label_index", "prediction", "confidence", "features", "vlm_embedding"]


def class_names(cfg: Config, embeddings: Path) -> list[str]:
    """The classifier's class order: as `embed` recorded it, else ``data.classes``, else the order the table's
    ``label`` / ``label_index`` columns state (ValueError asking for ``data.classes`` when they state none)."""
    metrics = embeddings.parent / "metrics.json"
    if metrics.is_file() and "classes" in json.loads(metrics.read_text()):
        return json.loads(metrics.read_text())["classes"]
    if cfg.data.classes:
        return list(cfg.data.classes)
    stated = stated_classes(pq.read_table(embeddings, columns=["label", "label_index"]))
    if stated is None:
        raise ValueError(f"the class order of {embeddings} is not recorded ({metrics}) and its labels do not state it "
                         f"(one label_index per label, 0..K-1): set data.classes")
    return stated


def text_embeddings(cfg: Config, classes: list[str]):
    """The concept set, the ``(C, E)`` concept and ``(K, E)`` class text embeddings and the ``(E,)`` embedding of
    the set's absence prompt (the trust check's reference)."""
    concepts = load_concepts(cfg.analyze.concepts)
    spec = model_spec(cfg)
    vlm = spec.vlm()
    with torch.no_grad():
        return (concepts, concepts.bank(vlm).embeddings.numpy(), concepts.class_bank(vlm, classes).embeddings.numpy(),
                concepts.absence_embedding(vlm).numpy())


def fit_aligner(cfg: Config, embeddings: Path):
    """Ridge-fit the aligner on ``fit_split``, streaming; R² on that split and on the other rows, or, when
    ``fit_split`` leaves fewer than 2 other rows, by CV_FOLDS-fold cross-validation on the fit rows
    (``r2_held_out_method``: ``held_out`` or ``cv5``; folds by row position)."""
    dataset = pads.dataset(embeddings, format="parquet")
    in_fit = pc.field("split") == cfg.analyze.fit_split
    folds, seen = [AlignerFit() for _ in range(CV_FOLDS)], 0
    for batch in dataset.to_batches(columns=["features", "vlm_embedding"], filter=in_fit):
        z, e = vectors(batch.column("features")), vectors(batch.column("vlm_embedding"))
        fold = (seen + np.arange(len(z))) % CV_FOLDS
        for k, part in enumerate(folds):
            part.update(z[fold == k], e[fold == k])
        seen += len(z)
    fit = sum(folds[1:], folds[0])
    if fit.n == 0:
        present = sorted(pc.unique(dataset.to_table(columns=["split"])["split"]).to_pylist())
        raise ValueError(f"no rows of split {cfg.analyze.fit_split!r} to fit the aligner on (analyze.fit_split); "
                         f"the embeddings have splits {present}")
    aligner = fit.solve(cfg.analyze.ridge)
    held_out = HeldOutR2(aligner)
    for batch in dataset.to_batches(columns=["features", "vlm_embedding"], filter=~in_fit):
        held_out.update(vectors(batch.column("features")), vectors(batch.column("vlm_embedding")))
    if held_out.n >= 2:
        r2, method = held_out.value, "held_out"
    else:
        r2, method = cross_validated_r2(folds, cfg.analyze.ridge), f"cv{CV_FOLDS}"
    return aligner, {"fit_rows": fit.n, "held_out_rows": held_out.n, "r2_fit": aligner.r2, "r2_held_out": r2,
                     "r2_held_out_method": method}


def calibrate_with_probes(cfg: Config, concepts: list[str], concept_emb: np.ndarray, out: Path) -> Calibration | None:
    """The probe calibration of ``analyze.probes`` (None without probes), written to ``probes.json``."""
    if not cfg.analyze.probes:
        (out / "probes.json").unlink(missing_ok=True)
        return None
    scores, labels, unreadable = probe_scores(model_spec(cfg).vlm(), concept_emb, cfg.analyze.probes,
                                              cfg.data.image_size)
    calibration = calibrate(scores, labels, concepts, min_j=cfg.analyze.min_probe_j)
    found = calibration.as_dict() | {"source": str(cfg.analyze.probes), "unreadable": [list(u) for u in unreadable]}
    (out / "probes.json").write_text(json.dumps(found, indent=1))
    probed = [c for c, v in found["concepts"].items() if v["probed"]]
    log(f"analyze: {len(labels)} probe images calibrate {len(probed)} of {len(concepts)} concepts"
        + (f" ({len(unreadable)} unreadable, named in probes.json)" if unreadable else ""))
    for c in probed:
        v = found["concepts"][c]
        log(f"analyze: probes: {c:<24} {v['positives']:>3}+/{v['negatives']:<4} sensitivity {v['se']:.2f} "
            f"specificity {v['sp']:.2f}{'' if v['reliable'] else '  (unreliable: J ' + format(v['j'], '.2f') + ')'}")
    return calibration


def score_and_analyze(cfg: Config, embeddings: Path, scorer: ConceptScorer, absence: np.ndarray, classes: list[str],
                      concepts: list[str], out: Path,
                      calibration: Calibration | None = None) -> tuple[AnalysisResult, Trust]:
    """Score every row on Ray Data into ``scores.parquet``; analyse the rows of ``analyze.splits`` and check
    whether the VLM can be trusted on them (:mod:`conceptlens.semantic.trust`; ``absence``: ``(E,)``)."""
    analysis = ConceptAnalysis(classes, concepts, presence_threshold=cfg.analyze.presence_threshold,
                               alpha=cfg.analyze.alpha, top=cfg.analyze.top, calibration=calibration)
    keep = set(cfg.analyze.splits)
    scores_path, faults_path = out / "scores.parquet", out / "faults.parquet"
    scores_writer = faults_writer = None
    dataset = pads.dataset(embeddings, format="parquet")
    schema = dataset.schema
    progress, absence_r = Progress("analyze: scored", dataset.count_rows()), AbsenceCorrelation()
    decisiveness = GroupDecisiveness(concepts)
    for batch in map_parquet(str(embeddings), scorer, batch_size=cfg.analyze.batch_size, num_cpus=cfg.analyze.num_cpus,
                             columns=SCORED_COLUMNS):
        table = batch_to_table({k: v for k, v in batch.items() if k not in VECTOR_COLUMNS}, schema)
        scores_writer = scores_writer or pq.ParquetWriter(scores_path, table.schema)
        scores_writer.write_table(table)
        rows = {k: v[np.isin(batch["split"], list(keep))] for k, v in batch.items()}
        faults = analysis.update(rows)
        absence_r.update(stack(rows["vlm_scores"]), unit(stack(rows["vlm_embedding"])) @ absence)
        decisiveness.update(stack(rows["vlm_scores"]))
        if len(faults["index"]):
            picked = {k: rows[k][faults["index"]] for k in ("id", "split", "label_index", "prediction",
                                                            "aligned_zero_shot", "vlm_zero_shot")}
            table = batch_to_table(picked | {"fault": faults["fault"], "oracle_recognises": faults["oracle_recognises"]},
                                   schema)
            faults_writer = faults_writer or pq.ParquetWriter(faults_path, table.schema)
            faults_writer.write_table(table)
        progress.update(len(batch["id"]))
    for writer in (scores_writer, faults_writer):
        if writer:
            writer.close()
    if analysis.rows == 0:
        raise ValueError(f"no rows of splits {sorted(keep)} in {embeddings} (analyze.splits)")
    analysis.freeze()
    columns = ["split", "label_index", "prediction"] + [f"{s}_scores" for s in SOURCES]
    for batch in pq.ParquetFile(scores_path).iter_batches(batch_size=cfg.analyze.batch_size, columns=columns):
        rows = {name: vectors(batch.column(name)) if name.endswith("_scores") else
                batch.column(name).to_numpy(zero_copy_only=False) for name in columns}
        mask = np.isin(rows["split"], list(keep))
        analysis.update_presence({k: v[mask] for k, v in rows.items()})
    result = analysis.result()
    trust = assess(result.zero_shot["vlm"], len(classes), absence_r, concepts, min_skill=cfg.analyze.min_vlm_skill,
                   max_absence_r=cfg.analyze.max_absence_r, min_spread=cfg.analyze.min_spread,
                   decisiveness=decisiveness, min_decisive=cfg.analyze.min_decisive, calibration=calibration)
    return result, trust


FIGURES = {"differential": ("correct − incorrect (outlined: significant, BH)", "z-score"),
           "risk_ratio": ("log(failure rate with / without the concept) (outlined: significant, BH)", "log ratio")}


def draw(result: AnalysisResult, classes: list[str], concepts: list[str], folder: Path) -> list[Path]:
    """PNGs of the two views that say what goes with failure, per source (for the MLflow UI); every view, with
    each cell's interval and q, is in the HTML report (`conceptlens report`)."""
    folder.mkdir(exist_ok=True)
    for stale in folder.glob("*.png"):  # a re-run leaves no figure of an earlier version behind
        stale.unlink()
    paths = []
    for source, table in result.heatmaps.items():
        for kind, (title, label) in FIGURES.items():
            marks = matrix(table, kind, classes, concepts, "significant").astype(bool)
            paths.append(plot_heatmap(matrix(table, kind, classes, concepts), classes, concepts,
                                      folder / f"{source}_{kind}.png", title=f"{source}: {title}",
                                      diverging=True, marks=marks, label=label))
    return paths


def summarize(result: AnalysisResult, aligner_metrics: dict, trust: Trust) -> dict:
    """Everything ``analyze`` concludes; what the trust check does not back carries ``reliable: false``."""
    return {
        "rows": result.rows, "misclassified": result.misclassified,
        "aligner": aligner_metrics,
        "zero_shot_accuracy": result.zero_shot,
        "trust": trust.as_dict(),
        "faults": result.faults | {"reliable": trust.sees_classes},
        "responsible": {source: {cls: [{"concept": r.concept, "risk_ratio": r.risk_ratio, "effect": r.effect,
                                         "q": r.q, "direction": r.direction, "reliable": trust.reliable(r.concept)}
                                       for r in items] for cls, items in per_class.items()}
                        for source, per_class in result.responsible.items()},
    }


def analyze(cfg: Config) -> dict:
    out = command_dir(cfg.run, "analyze")
    embeddings = embeddings_table(cfg, cfg.analyze.embeddings, "analyze.embeddings")
    classes = class_names(cfg, embeddings)
    concept_set, concept_emb, class_emb, absence_emb = text_embeddings(cfg, classes)
    log(f"analyze: {len(concept_set.names)} concepts from {concept_set.source}, {len(classes)} classes")
    aligner, aligner_metrics = fit_aligner(cfg, embeddings)
    aligner.save(out / "aligner.npz")
    log(f"analyze: aligner R² {aligner_metrics['r2_fit']:.3f} on {cfg.analyze.fit_split}, "
        f"{aligner_metrics['r2_held_out']:.3f} held out ({aligner_metrics['r2_held_out_method']})")
    calibration = calibrate_with_probes(cfg, concept_set.names, concept_emb, out)
    init_ray(cfg.ray)
    result, trust = score_and_analyze(cfg, embeddings, ConceptScorer(aligner, concept_emb, class_emb), absence_emb,
                                      classes, concept_set.names, out, calibration)
    for line in trust.warnings():
        log(f"analyze: warning: {line}")
    for source, table in result.heatmaps.items():
        reliable = [trust.reliable(c) for c in table["concept"].to_pylist()]
        pq.write_table(table.append_column("source", pa.array([source] * table.num_rows))
                       .append_column("reliable", pa.array(reliable, pa.bool_())), out / f"heatmaps_{source}.parquet")
    draw(result, classes, concept_set.names, out / "figures")
    (out / "concepts.json").write_text(json.dumps({"classes": classes, "concepts": concept_set.prompts()}, indent=1))
    np.savez(out / "concepts.npz", concepts=concept_emb, classes=class_emb,
             **{f"{source}_{stat}": value for source, pair in result.standardizer.items()
                for stat, value in zip(("mean", "std"), pair)})
    summary = summarize(result, aligner_metrics, trust)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    metrics = {k: summary[k] for k in ("rows", "misclassified", "aligner", "zero_shot_accuracy")}
    metrics["faults"] = summary["faults"]["overall"]
    metrics["trust"] = {k: summary["trust"][k] for k in ("skill", "sees_classes", "unreliable_concepts")}
    metrics["responsible_top"] = {source: {cls: found[0] for cls, found in findings(per_class).items() if found}
                                  for source, per_class in summary["responsible"].items()}
    write_metrics(out, metrics)
    return summary


def findings(per_class: dict[str, list[dict]]) -> dict[str, list[str]]:
    """The blamed concepts the trust check backs, per class, in rank order."""
    return {cls: [r["concept"] for r in items if r["reliable"]] for cls, items in per_class.items()}


def report(summary: dict) -> str:
    f, a, z = summary["faults"]["overall"], summary["aligner"], summary["zero_shot_accuracy"]
    lines = [f"warning: {line}" for line in summary["trust"]["warnings"]]
    lines.append(f"aligner R² {a['r2_fit']:.3f} (fit), {a['r2_held_out']:.3f} ({a['r2_held_out_method']}); "
                 f"zero-shot accuracy: aligned features {z['aligned']:.3f}, VLM {z['vlm']:.3f}")
    if not summary["trust"]["sees_classes"]:
        lines.append(f"{summary['misclassified']} of {summary['rows']} rows misclassified; fault localisation and "
                     f"blamed concepts are not reported: the VLM does not recognise the classes (summary.json "
                     f"keeps them, marked unreliable)")
        return "\n".join(lines)
    lines += [f"{summary['misclassified']} of {summary['rows']} rows misclassified: encoder {f['encoder']} "
              f"({(f['encoder_share'] or 0):.0%}), head {f['head']} ({(f['head_share'] or 0):.0%})",
              "concepts that go with failure, per class (VLM; ×: how much more often the class fails with the "
              "concept present; the aligned source, what the encoder itself represents, is in summary.json):"]
    for cls, items in summary["responsible"]["vlm"].items():
        named = [f"{r['concept']} ×{r['risk_ratio']:.2f}" for r in items if r["reliable"]][:3]
        lines.append(f"  {cls:<10} {', '.join(named) or 'none significant'}")
    return "\n".join(lines)


def run(cfg: Config) -> dict:
    cfg = run_inputs(cfg)  # the models and classes the embeddings were made with
    with mlflow_run(cfg, "analyze"):
        summary = analyze(cfg)
        out = command_dir(cfg.run, "analyze")
        log_results(json.loads((out / "metrics.json").read_text()), *sorted(out.glob("*.*")), out / "figures")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    return run_command("analyze", __doc__, argv, run, report)


if __name__ == "__main__":
    sys.exit(main())
