"""conceptlens rootcause: cluster the failures into root causes (the HUDD/SAFE pipeline study) on Ray.

Reads the misclassified rows of ``rootcause.splits`` from the embeddings table (``embed``; with
``rootcause.adversarial=true`` also the successful attacks of ``attack``: adversarial rows whose clean image the
classifier got right, a separate set) and the concept analysis (``analyze``). Computes each extractor's
features (``rootcause.extractors``; the image extractors as Ray Data actor jobs), runs every pipeline of the grid
(extractor × ``rootcause.reductions`` × ``rootcause.clusterings``, plus HUDD's own) as Ray tasks, picks the
pipeline with the best internal index (or ``rootcause.pipeline``) and describes its clusters. Writes under
``<run>/rootcause/``: ``clusters.parquet`` (set, row id, pipeline, cluster, noise flag), ``pipelines.parquet``
(internal index, clusters, noise share, seconds per pipeline), ``cards.json`` and ``figures/<set>_cluster_<c>.png``
(exemplar montages) for the chosen pipeline, ``summary.json`` and ``metrics.json``; one nested MLflow run per
pipeline.
"""
from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from conceptlens.cli import run_command
from conceptlens.config import Config
from conceptlens.jobs.analyze import class_names
from conceptlens.models import concept_groups
from conceptlens.pipeline.raydata import init_ray, map_images
from conceptlens.pipeline.runs import (Progress, analyze_dir, command_dir, embeddings_table, log, model_spec,
                                       run_inputs, write_metrics)
from conceptlens.pipeline.shards import read_rows
from conceptlens.pipeline.tracking import log_child_runs, log_results, mlflow_run
from conceptlens.recipes.train_autoencoder import ensure_autoencoder
from conceptlens.report.figures import plot_montage
from conceptlens.rootcause import (DIRECTIONS, IMAGE_EXTRACTORS, NOISE, TABLE_EXTRACTORS, Card, ImageFeatureSet, Pipeline,
                                   add_concepts, build_cards, choose, concept_scores, describe, direction_features, grid,
                                   points, run_grid, with_labels)
from conceptlens.semantic import presence, read_trust

MIN_FAILURES = 8
SHOWN = 8  # pipelines printed, best internal index first (all of them in pipelines.parquet)
VLM_EXTRACTORS = ("vlm", "concepts", "directions")  # features read in the VLM's embedding space


def failure_sets(cfg: Config, clean: dict) -> dict[str, dict]:
    """``heldout``: the misclassified clean rows; ``adversarial`` (when asked for): successful attacks."""
    wrong = clean["label_index"] != clean["prediction"]
    sets = {"heldout": {k: v[wrong] for k, v in clean.items()}}
    if cfg.rootcause.adversarial:
        folder = Path(cfg.run.root) / cfg.run.name / "attack" / "embeddings"
        if not any(folder.glob("*.parquet")):
            raise FileNotFoundError(f"rootcause.adversarial=true but there are no adversarial embeddings at {folder}; "
                                    f"run `conceptlens attack` first")
        adv = read_rows(folder, cfg.rootcause.splits, extra=["id", "path", "clean_prediction"])
        hit = (adv["clean_prediction"] == adv["label_index"]) & (adv["prediction"] != adv["label_index"])
        sets["adversarial"] = {k: v[hit] for k, v in adv.items()}
    for name, rows in sets.items():
        if len(rows["id"]) < MIN_FAILURES:
            raise ValueError(f"only {len(rows['id'])} {name} failures in splits {list(cfg.rootcause.splits)}: "
                             f"at least {MIN_FAILURES} are needed to cluster (rootcause.splits)")
    return sets


def concept_analysis(cfg: Config) -> dict | None:
    """``analyze``'s concept embeddings, statistics and names and its trust check, or None when it has not run."""
    folder = analyze_dir(cfg)
    if not (folder / "concepts.npz").is_file():
        return None
    text = np.load(folder / "concepts.npz")
    names = list(json.loads((folder / "concepts.json").read_text())["concepts"])
    return {"concepts": text["concepts"], "mean": text["vlm_mean"], "std": text["vlm_std"], "names": names,
            "trust": read_trust(folder)}


def untrusted_extractors(cfg: Config, concepts: dict | None) -> set[str]:
    """The extractors whose features rest on the VLM, when analyze's trust check found it does not recognise the
    classes: their pipelines run (and are reported, marked) but are never chosen."""
    trust = concepts["trust"] if concepts else None
    if trust is None or trust.sees_classes:
        return set()
    return set(VLM_EXTRACTORS) | ({"backbone"} if cfg.rootcause.backbone == "vlm" else set())


def check_settings(cfg: Config) -> list[Pipeline]:
    """The grid ``rootcause.*`` asks for, before anything runs: an unknown extractor, reduction, clustering or
    pipeline is a ValueError naming the key."""
    cfg_rc = cfg.rootcause
    unknown = sorted(set(cfg_rc.extractors) - set(TABLE_EXTRACTORS) - set(IMAGE_EXTRACTORS) - {DIRECTIONS})
    if unknown:
        raise ValueError(f"unknown extractor(s) {unknown} in rootcause.extractors: choose from "
                         f"{sorted(TABLE_EXTRACTORS) + [DIRECTIONS] + list(IMAGE_EXTRACTORS)}")
    pipelines = grid(cfg_rc.extractors, cfg_rc.reductions, cfg_rc.clusterings, cfg_rc.hudd)
    if cfg_rc.pipeline and Pipeline.parse(cfg_rc.pipeline) not in pipelines:
        raise ValueError(f"rootcause.pipeline={cfg_rc.pipeline!r} is not in the grid: "
                         f"{[p.name for p in pipelines]}")
    return pipelines


def features_of(cfg: Config, rows: dict, all_rows: dict, concepts: dict | None) -> dict[str, np.ndarray]:
    """Every extractor's features of ``rows`` (the image extractors in one Ray Data pass), label block appended."""
    cfg_rc, raw = cfg.rootcause, {}
    start = time.perf_counter()
    for name in cfg_rc.extractors:
        if name == "concepts":
            if concepts is None:
                raise FileNotFoundError("the `concepts` extractor needs the concept analysis: run `conceptlens "
                                        "analyze` first, or drop concepts from rootcause.extractors")
            raw[name] = concept_scores(rows["vlm_embedding"], concepts["concepts"], concepts["mean"], concepts["std"])
        elif name in TABLE_EXTRACTORS:
            raw[name] = rows[TABLE_EXTRACTORS[name]]
        elif name == DIRECTIONS:  # fitted on every row of the splits (correct ones too), each class its own
            scores = direction_features(all_rows["vlm_embedding"], all_rows["label_index"],
                                      all_rows["label_index"] != all_rows["prediction"], seed=cfg_rc.seed)
            position = {row_id: i for i, row_id in enumerate(all_rows["id"].tolist())}
            raw[name] = scores[[position[i] for i in rows["id"].tolist()]]
    raw |= image_features(cfg, [n for n in cfg_rc.extractors if n in IMAGE_EXTRACTORS], rows, all_rows)
    log(f"rootcause: features of {len(rows['id'])} failures in {time.perf_counter() - start:.0f} s: "
        + ", ".join(f"{name} {x.shape[1]}-d" for name, x in raw.items()))
    return {name: with_labels(x, rows["label_index"], cfg.classifier.num_classes, cfg_rc.class_weight)
            for name, x in raw.items()}


def image_features(cfg: Config, names: list[str], rows: dict, all_rows: dict) -> dict[str, np.ndarray]:
    """The image extractors ``names`` on ``rows``' images, one Ray Data actor job (the autoencoder trained or
    reused first, on all held-out images)."""
    if not names:
        return {}
    spec, cfg_rc, size = model_spec(cfg), cfg.rootcause, cfg.data.image_size
    autoencoder = None
    if "autoencoder" in names:
        autoencoder = str(ensure_autoencoder(cfg, list(all_rows["path"]), size, log=log))
    factory = functools.partial(ImageFeatureSet, names, spec, backbone=cfg_rc.backbone,
                                backbone_weights=cfg_rc.backbone_weights, relevance_layer=cfg_rc.relevance_layer,
                                autoencoder=autoencoder, device=cfg.run.device)
    found, unreadable = {name: {} for name in names}, []
    table = pa.table({"id": rows["id"], "path": rows["path"]})
    with Progress(f"rootcause: image features ({', '.join(names)})", table.num_rows, unit="images") as progress:
        for batch in map_images(table, factory, cfg.embed, batch_size=cfg.embed.batch_size, image_size=size):
            unreadable += [i for i, error in zip(batch["id"].tolist(), batch["error"]) if error]
            for name in names:
                found[name].update(zip(batch["id"].tolist(), batch[f"rootcause_{name}"]))
            progress.update(len(batch["id"]))
    if unreadable:  # embedded once, unreadable now (moved or damaged since): they stay, as blank images
        log(f"rootcause: warning: {len(unreadable)} failure images could not be read again (first: "
            f"{unreadable[0]}); their image features are those of a blank image")
    return {name: np.stack([found[name][i] for i in rows["id"].tolist()]).astype(np.float32) for name in names}


def study(cfg: Config, name: str, rows: dict, all_rows: dict, concepts: dict | None, classes: list[str],
          out: Path) -> dict:
    """The whole grid on one failure set; cards for the chosen pipeline; nested MLflow runs."""
    cfg_rc = cfg.rootcause
    features = features_of(cfg, rows, all_rows, concepts)
    pipelines = check_settings(cfg)
    with Progress(f"rootcause: {name}", total=len(pipelines), unit="pipelines") as progress:
        results = run_grid(features, pipelines, components=cfg_rc.components, fit_rows=cfg_rc.fit_rows,
                           max_clusters=cfg_rc.max_clusters, seed=cfg_rc.seed, num_cpus=cfg_rc.num_cpus,
                           progress=lambda result, done, total: progress.update(1))
    avoid = untrusted_extractors(cfg, concepts)
    if avoid:
        log(f"rootcause: {name}: the VLM does not recognise these classes (analyze's trust check): pipelines on "
            f"{', '.join(sorted(avoid))} are run and reported but not chosen")
    chosen = choose(results, cfg_rc.pipeline, avoid)
    log(f"rootcause: {name}: chosen {chosen.pipeline.name} (index {chosen.clustering.index:.3f}, "
        f"{chosen.clustering.clusters} clusters, noise {chosen.clustering.noise_share:.0%})")
    log_child_runs([{"name": f"{cfg.run.name}/rootcause/{name}/{r.pipeline.name}",
                     "params": {"set": name, "extractor": r.pipeline.extractor, "reduction": r.pipeline.reduction,
                                "clustering": r.pipeline.clustering, **r.clustering.params},
                     "metrics": {k: r.row()[k] for k in ("index", "clusters", "noise_share", "seconds")}
                     | {"chosen": float(r is chosen)}} for r in results])
    cards = describe_clusters(cfg, name, chosen, rows, all_rows, concepts, classes, out / "figures")
    return {"rows": rows, "results": results, "chosen": chosen, "cards": cards, "untrusted": sorted(avoid)}


def concept_presence(embeddings: np.ndarray, concepts: dict, threshold: float) -> np.ndarray:
    """Which concepts the VLM sees in each row, ``bool (N, C)``, as `analyze` decides it."""
    scores = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True) @ concepts["concepts"].T
    return presence(scores, concepts["mean"], concepts["std"], concept_groups(concepts["names"]), threshold)


def describe_clusters(cfg: Config, name: str, chosen, rows: dict, all_rows: dict, concepts: dict | None,
                      classes: list[str], figures: Path) -> list:
    """The chosen pipeline's cards (with the concepts that set each cluster apart when the analysis exists) and
    their exemplar montages."""
    labels = chosen.clustering.labels
    cards = build_cards(labels, points(chosen), rows["label_index"], rows["prediction"], classes,
                        exemplars=cfg.rootcause.exemplars)
    trust = concepts["trust"] if concepts else None
    backed = [trust is None or trust.reliable(c) for c in concepts["names"]] if concepts else []
    if concepts is not None and any(backed):
        correct = all_rows["label_index"] == all_rows["prediction"]
        threshold = cfg.analyze.presence_threshold
        keep = np.flatnonzero(backed)  # concepts the trust check did not back are never named
        failing = concept_presence(rows["vlm_embedding"], concepts, threshold)[:, keep]
        passing = concept_presence(all_rows["vlm_embedding"][correct], concepts, threshold)[:, keep]
        add_concepts(cards, labels, failing, rows["label_index"], passing, all_rows["label_index"][correct],
                     [concepts["names"][j] for j in keep], alpha=cfg.rootcause.alpha)
    elif concepts is not None:
        log(f"rootcause: {name}: cards name no concept: analyze's trust check backs none of the VLM's concepts")
    figures.mkdir(exist_ok=True)
    for card in cards:
        plot_montage([rows["path"][i] for i in card.exemplars], figures / f"{name}_cluster_{card.cluster}.png",
                     title=describe(card, pairs=2, concepts=2))
    return cards


def write_outputs(studies: dict[str, dict], out: Path) -> dict:
    clusters, pipelines, summary = [], [], {"sets": {}}
    for name, s in studies.items():
        ids = s["rows"]["id"].tolist()
        for r in s["results"]:
            labels = r.clustering.labels
            clusters.append(pa.table({"set": [name] * len(ids), "id": ids, "pipeline": [r.pipeline.name] * len(ids),
                                      "cluster": labels, "noise": labels == NOISE}))
            pipelines.append(r.row() | {"set": name, "chosen": r is s["chosen"],
                                        "untrusted": r.pipeline.extractor in s["untrusted"]})
        chosen = s["chosen"]
        summary["sets"][name] = {"failures": len(ids), "pipelines": len(s["results"]), "chosen": chosen.row(),
                                 "untrusted_extractors": s["untrusted"],
                                 "best_by_index": [r.row() for r in sorted(s["results"],
                                                                           key=lambda r: -r.clustering.index)[:SHOWN]],
                                 "cards": [c.as_dict() | {"exemplar_ids": [ids[i] for i in c.exemplars]}
                                           for c in s["cards"]]}
    pq.write_table(pa.concat_tables(clusters), out / "clusters.parquet")
    pq.write_table(pa.Table.from_pylist(pipelines), out / "pipelines.parquet")
    (out / "cards.json").write_text(json.dumps({k: v["cards"] for k, v in summary["sets"].items()}, indent=1))
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    write_metrics(out, {name: {k: v for k, v in s["chosen"].items() if k in ("index", "clusters", "noise_share")}
                        | {"failures": s["failures"]} for name, s in summary["sets"].items()})
    return summary


def rootcause(cfg: Config) -> dict:
    out = command_dir(cfg.run, "rootcause")
    table = embeddings_table(cfg, cfg.rootcause.embeddings, "rootcause.embeddings")
    clean = read_rows(table, cfg.rootcause.splits, extra=["id", "path"])
    classes = class_names(cfg, table)
    concepts = concept_analysis(cfg)
    if concepts is None:
        log("rootcause: no concept analysis (run `conceptlens analyze`): cards will not name concepts")
    init_ray(cfg.ray)
    studies = {name: study(cfg, name, rows, clean, concepts, classes, out)
               for name, rows in failure_sets(cfg, clean).items()}
    return write_outputs(studies, out)


def report(summary: dict) -> str:
    lines = []
    for name, s in summary["sets"].items():
        c = s["chosen"]
        lines.append(f"{name}: {s['failures']} failures, {s['pipelines']} pipelines, best internal index first:")
        lines.append(f"  {'pipeline':<34}{'index':>7}{'k':>4}{'noise':>7}{'seconds':>9}  settings")
        lines += [f"  {p['pipeline']:<34}{p['index']:>7.3f}{p['clusters']:>4}{p['noise_share']:>7.0%}"
                  f"{p['seconds']:>9.1f}  {p['params']}" for p in s["best_by_index"]]
        lines.append(f"chosen {c['pipeline']} (index {c['index']:.3f}, {c['clusters']} clusters, noise "
                     f"{c['noise_share']:.0%}):")
        lines += [f"  {describe(Card.from_dict(card))}" for card in s["cards"][:10]]
        if len(s["cards"]) > 10:
            lines.append(f"  … {len(s['cards']) - 10} more in cards.json")
    return "\n".join(lines)


def run(cfg: Config) -> dict:
    cfg = run_inputs(cfg)
    check_settings(cfg)  # before MLflow and Ray: a typo costs nothing
    with mlflow_run(cfg, "rootcause"):
        summary = rootcause(cfg)
        out = command_dir(cfg.run, "rootcause")
        log_results(json.loads((out / "metrics.json").read_text()), out / "metrics.json", out / "summary.json",
                    out / "cards.json", out / "pipelines.parquet", out / "clusters.parquet", out / "figures")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    return run_command("rootcause", __doc__, argv, run, report)


if __name__ == "__main__":
    sys.exit(main())
