"""conceptlens evaluate: the ground-truth scorecard of a run whose attributes are known.

Reads the run's outputs and its truth: its world's (``<run>/world/truth.parquet``) for a ConceptWorld run, or the
user's own attribute table declared as ``evaluate.truth`` (an id column, exclusive groups, free-standing boolean
concepts, the failure slices to score; each row's slice found from its class). Then scores every
diagnosis: the world (each slice's gap on test; *planted* when ≥ 0.20, later sections score
only planted ones), the semantic analysis per source (``analyze``'s significant risk-ratio cells
against the ground-truth risk-ratio heatmap of the analysed rows: precision, recall, direction
agreement, rank correlation, top blamed concepts, each planted concept's rank), fault localisation
per scenario (on the errors outside the aligner's fit), the runtime filter per planted slice (AUROC of slice errors vs correct test rows), and the
root-cause clusters of every pipeline (purity, coverage, rare subgroups; the chosen pipeline against the best
by the truth), and the sentences of each method (the rank of the first sentence naming each planted scenario,
distractors shown).
A section whose command has not run is reported absent. Last, the fidelity goals
(:mod:`conceptlens.evaluation.goals`), each met or short by how much. Writes under ``<run>/evaluate/``:
``scorecard.json``, ``ground_truth.parquet`` (the ground-truth heatmap), ``metrics.json`` and, where a filter
bundle exists, ``filter_scores.parquet`` (the filter's misclassification score per test row, for ``compare``).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from conceptlens.cli import run_command
from conceptlens.config import Config
from conceptlens.evaluation.alerts import alerts_section
from conceptlens.evaluation.blame import blame_agreement, risk_ratio_rows, semantic_scores
from conceptlens.evaluation.clusters import rootcause_section
from conceptlens.evaluation.goals import goals
from conceptlens.evaluation.ground_truth import WORLD_SOURCE, Truth, truth_heatmap
from conceptlens.evaluation.neurons import neurons_section
from conceptlens.evaluation.render import render_scorecard
from conceptlens.evaluation.runtime import filter_section
from conceptlens.evaluation.sentences import explain_section
from conceptlens.evaluation.observer import observer_section
from conceptlens.evaluation.scorecard import finite, localisation_section, runtime_section, world_section
from conceptlens.pipeline.shards import read_rows
from conceptlens.pipeline.runs import command_dir, log, run_inputs, write_metrics
from conceptlens.pipeline.tracking import log_results, mlflow_run
from conceptlens.runtime.registered import load_bundle
from conceptlens.models import concept_groups
from conceptlens.semantic import SOURCES, presence

FILTER_SCORES = "filter_scores.parquet"  # the filter's misclassification score per test row (id, score)


def analysed_rows(cfg: Config, analysis: Path) -> dict[str, np.ndarray]:
    """``id``, ``label_index``, ``prediction`` of the rows ``analyze`` described (``analyze.splits``), checked
    against the row count ``analyze`` reported."""
    table = pq.read_table(analysis / "scores.parquet", columns=["id", "split", "label_index", "prediction"])
    table = table.filter(pc.is_in(table["split"], pa.array(list(cfg.analyze.splits))))
    reported = json.loads((analysis / "summary.json").read_text())["rows"]
    if table.num_rows != reported:
        raise ValueError(f"analyze.splits={list(cfg.analyze.splits)} selects {table.num_rows} rows of "
                         f"{analysis / 'scores.parquet'}, but analyze described {reported}: set analyze.splits to "
                         f"the splits analyze ran with")
    return {name: table[name].to_numpy(zero_copy_only=False) for name in ("id", "label_index", "prediction")}


def semantic(cfg: Config, truth: Truth, analysis: Path, planted: list, out: Path) -> dict:
    """The semantic section of every source; writes the ground-truth heatmap to ``ground_truth.parquet``."""
    rows = analysed_rows(cfg, analysis)
    classes = json.loads((analysis / "concepts.json").read_text())["classes"]
    heatmap = truth_heatmap(truth.present_of(rows["id"]), rows["label_index"], rows["prediction"], classes,
                            truth.concepts, alpha=cfg.analyze.alpha)
    pq.write_table(heatmap, out / "ground_truth.parquet")
    section = {"rows": len(rows["id"]), "splits": list(cfg.analyze.splits), "alpha": cfg.analyze.alpha,
               "truth": {"cells": heatmap.num_rows, "significant": int(pc.sum(heatmap["significant"]).as_py())}}
    for source in SOURCES:
        table = risk_ratio_rows(pq.read_table(analysis / f"heatmaps_{source}.parquet"))
        section[source] = semantic_scores(table, heatmap, classes, truth.concepts, planted)
    return section


def observer_recipe(cfg: Config) -> tuple[str, list[str]]:
    """How the run's VLM was made and the attribute groups it never heard of, from the record a tiny CLIP is
    cached with (``vlm-<hash>.json``: its recipe and ``vlm.captions.unseen``); a VLM without one is ``pretrained``."""
    record = Path(cfg.vlm.pretrained).with_suffix(".json") if cfg.vlm.pretrained else None
    if record is None or not record.is_file():
        return f"pretrained {Path(cfg.vlm.pretrained).name if cfg.vlm.pretrained else 'none'}", []
    info = json.loads(record.read_text())
    return info.get("recipe", "supervised"), list(info.get("unseen", []))


def observer(cfg: Config, truth: Truth, run: Path, out: Path) -> dict:
    """The observer's quality and the trust check against the truth on the analysed rows, and how right the blame
    of each concept came out (:mod:`~conceptlens.evaluation.observer`)."""
    analysis = run / "analyze"
    scores = pq.read_table(analysis / "scores.parquet", columns=["id", "split", "vlm_scores"])
    scores = scores.filter(pc.is_in(scores["split"], pa.array(list(cfg.analyze.splits))))
    vlm = np.stack(scores["vlm_scores"].to_numpy(zero_copy_only=False))
    summary = json.loads((analysis / "summary.json").read_text())
    names = list(json.loads((analysis / "concepts.json").read_text())["concepts"])
    stats = np.load(analysis / "concepts.npz")
    probes = analysis / "probes.json"
    raw = np.array([np.nan if v.get("threshold") is None else v["threshold"] for v in
                    json.loads(probes.read_text())["concepts"].values()]) if probes.is_file() else None
    called = presence(vlm, stats["vlm_mean"], stats["vlm_std"], concept_groups(names),
                      cfg.analyze.presence_threshold, raw)
    cells = risk_ratio_rows(pq.read_table(analysis / "heatmaps_vlm.parquet"))
    shown = [(r["class"], r["concept"]) for r in cells.to_pylist() if r["significant"] and r.get("reliable", True)]
    sentences = []
    if (run / "explain" / "sentences.parquet").is_file():
        table = pq.read_table(run / "explain" / "sentences.parquet")
        sentences = [r for r in table.to_pylist() if r["shown"] and r["default"]]
    recipe, unseen = observer_recipe(cfg)
    section = observer_section(vlm, called, names, truth.present_of(scores["id"].to_numpy(zero_copy_only=False)),
                               truth.concepts, list(summary.get("trust", {}).get("unreliable_concepts", [])),
                               zero_shot=summary["zero_shot_accuracy"]["vlm"], recipe=recipe, unseen_groups=unseen,
                               presented=shown, sentences=sentences)
    if (out / "ground_truth.parquet").is_file():
        section["blame_agreement"] = blame_agreement(cells, pq.read_table(out / "ground_truth.parquet"))
    return section


def unscorable_concepts(analysis: Path, truth: Truth) -> str | None:
    """Why the blamed concepts cannot be scored (``analyze`` used a concept set that names none of the truth's
    concepts), else None."""
    scored = json.loads((analysis / "concepts.json").read_text())["concepts"]
    if set(scored) & set(truth.concepts):
        return None
    fix = ("`conceptlens analyze analyze.concepts=conceptworld` scores them" if truth.source == WORLD_SOURCE else
           "name the concept set's concepts as the truth names them (group=value, or a free column's name)")
    return (f"analyze scored none of the concepts of {truth.source} ({truth.concepts[:4]} …) "
            f"({analysis / 'concepts.json'}); {fix}")


def localisation(cfg: Config, truth: Truth, analysis: Path, planted: list) -> dict:
    """Fault localisation per planted scenario (``faults.parquet``: absent when nothing was misclassified), scored
    only on the errors outside the aligner's fit (``analyze.fit_split``) when there are any: the aligner's
    in-sample fit would flatter the encoder/head call on its own rows (``in_sample`` says when no other rows
    existed)."""
    ids = fault = np.array([], object)
    in_sample = False
    if (analysis / "faults.parquet").is_file():
        faults = pq.read_table(analysis / "faults.parquet", columns=["id", "split", "fault"])
        outside = faults.filter(pc.not_equal(faults["split"], cfg.analyze.fit_split))
        in_sample = outside.num_rows == 0 and faults.num_rows > 0
        faults = faults if in_sample else outside
        ids, fault = (faults[name].to_numpy(zero_copy_only=False) for name in ("id", "fault"))
    summary = json.loads((analysis / "summary.json").read_text())
    return {"rows": f"errors outside analyze.fit_split={cfg.analyze.fit_split}" if not in_sample else
            f"errors of analyze.fit_split={cfg.analyze.fit_split} (in sample: no other rows were analysed)",
            "in_sample": in_sample, "reliable": summary["faults"].get("reliable", True),
            "scenarios": localisation_section(fault, truth.scenario_of(ids), planted)}


def neurons(truth: Truth, folder: Path, planted: list) -> dict:
    """The neurons section over the rows ``neurons`` held out (their pooled features from its embeddings)."""
    predictions = pq.read_table(folder / "predictions.parquet")
    ids = predictions["id"].to_numpy(zero_copy_only=False)
    summary = json.loads((folder / "metrics.json").read_text())
    features = read_rows(Path(summary["embeddings"]), [summary["eval_split"]], ["id"])
    position = {row_id: i for i, row_id in enumerate(features["id"])}
    activations = features["features"][[position[i] for i in ids]]
    return neurons_section(pq.read_table(folder / "neurons.parquet"), predictions, activations, truth.present_of(ids),
                           truth.scenario_of(ids), truth.concepts, planted, summary["repair"]["edit"])


def evaluate(cfg: Config, truth: Truth) -> dict:
    run = Path(cfg.run.root) / cfg.run.name
    test = read_rows(run / "embed" / "embeddings", ["test"], ["id"])
    if not len(test["id"]):
        raise ValueError(f"no test rows in {run / 'embed' / 'embeddings'}: the scorecard measures slices on test "
                         f"(data.splits must keep test)")
    out = command_dir(cfg.run, "evaluate")
    wrong, scenario = test["prediction"] != test["label_index"], truth.scenario_of(test["id"])
    card = {"run": cfg.run.name, "truth": truth.source,
            "world": world_section(~wrong, scenario, truth.scenarios), "absent": {}}
    planted = [s for s in truth.scenarios if card["world"]["scenarios"][s.name]["planted"]]
    skipped = card["world"]["skipped"]
    analysis, bundle = run / "analyze", run / "monitor" / "bundle"
    if (analysis / "scores.parquet").is_file():
        if why := unscorable_concepts(analysis, truth):
            card["absent"]["semantic"] = why
        else:
            card["semantic"] = semantic(cfg, truth, analysis, planted, out) | {"skipped": skipped}
        card["localisation"] = localisation(cfg, truth, analysis, planted) | {"skipped": skipped}
        card["observer"] = observer(cfg, truth, run, out)
    else:
        for name in ("semantic", "localisation"):
            card["absent"][name] = f"no `analyze` outputs in {analysis} (run `conceptlens analyze`)"
    if (bundle / "filter.json").is_file():
        filt = load_bundle(str(bundle))
        flagged = filt.verdicts(test)["verdict"] != "accept"
        score = filt.score_all(test)["misclassified"]
        # per test row, for `compare` to pair two runs' AUROCs (DeLong): no truth in it, only ids and scores
        pq.write_table(pa.table({"id": pa.array(test["id"], pa.string()), "score": np.asarray(score, np.float64)}),
                       out / FILTER_SCORES)
        card["runtime"] = {"rows": "test", "scenarios": runtime_section(
            score, flagged, wrong, scenario, [s.name for s in planted], filt.fpr), "skipped": skipped}
        card["filter"] = filter_section(json.loads((run / "monitor" / "metrics.json").read_text()))
    else:
        (out / FILTER_SCORES).unlink(missing_ok=True)
        card["absent"]["runtime"] = f"no filter bundle in {bundle} (run `conceptlens monitor`)"
    causes = run / "rootcause"
    if (causes / "pipelines.parquet").is_file():
        clusters = pq.read_table(causes / "clusters.parquet", columns=["set", "id", "pipeline", "cluster"])
        ids = np.unique(clusters.filter(pc.equal(clusters["set"], "heldout"))["id"].to_numpy(zero_copy_only=False))
        card["rootcause"] = rootcause_section(clusters, pq.read_table(causes / "pipelines.parquet"),
                                              dict(zip(ids, truth.scenario_of(ids))), planted) | {"skipped": skipped}
        alerts = run / "monitor" / "alerts.parquet"
        if "runtime" in card and alerts.is_file():
            card["alerts"] = alerts_section(pq.read_table(alerts), dict(zip(test["id"], wrong)), truth, planted,
                                            card["rootcause"], clusters) | {"skipped": skipped}
    else:
        card["absent"]["rootcause"] = f"no `rootcause` outputs in {causes} (run `conceptlens rootcause`)"
    sentences = run / "explain"
    if (sentences / "sentences.parquet").is_file():
        hard = pq.read_table(sentences / "hard.parquet")
        ids = hard["id"].to_numpy(zero_copy_only=False)
        default = json.loads((sentences / "summary.json").read_text())["method"]
        card["explain"] = explain_section(pq.read_table(sentences / "sentences.parquet"), hard,
                                          dict(zip(ids, truth.scenario_of(ids))), planted, default) | {"skipped": skipped}
    else:
        card["absent"]["explain"] = f"no `explain` outputs in {sentences} (run `conceptlens explain`)"
    if (run / "neurons" / "predictions.parquet").is_file():
        card["neurons"] = neurons(truth, run / "neurons", planted) | {"skipped": skipped}
    else:
        card["absent"]["neurons"] = f"no `neurons` outputs in {run / 'neurons'} (run `conceptlens neurons`)"
    for name, why in card["absent"].items():
        log(f"evaluate: no {name} section: {why}")
    card = finite(card)
    card["goals"] = finite(goals(card))
    (out / "scorecard.json").write_text(json.dumps(card, indent=2))
    write_metrics(out, card)
    return card


def report(card: dict) -> str:
    return render_scorecard(card)


def truth_folder(cfg: Config) -> Path:
    """The world whose truth scores the run: its own (``<run>/world``), else the world whose manifest its embeddings
    were made from (``data.source`` a ``world/manifest.parquet`` beside its ``truth.parquet`` and ``config.json``:
    e.g. a repaired classifier embedded on the demo's world, ``data.source=runs/demo/world/manifest.parquet``)."""
    own = Path(cfg.run.root) / cfg.run.name / "world"
    source = Path(cfg.data.source) if cfg.data.source else None
    if not (own / "manifest.parquet").is_file() and source is not None and source.name == "manifest.parquet" \
            and (source.parent / "config.json").is_file():
        return source.parent
    return own


def load_truth(cfg: Config) -> Truth:
    """The run's truth: the user's (``evaluate.truth.table``, each row's class from the run's embeddings) or its
    ConceptWorld's."""
    declared = cfg.evaluate.truth
    if not declared.table:
        return Truth.of_world(truth_folder(cfg))
    embedded = Path(cfg.run.root) / cfg.run.name / "embed" / "embeddings"
    if not any(embedded.glob("*.parquet")):
        raise FileNotFoundError(f"no embeddings at {embedded}: run `conceptlens embed` for this run first")
    rows = pq.read_table(embedded, columns=["id", "label"])
    return Truth.declared(declared, dict(zip(rows["id"].to_pylist(), rows["label"].to_pylist())))


def run(cfg: Config) -> dict:
    cfg = run_inputs(cfg)
    truth = load_truth(cfg)  # before MLflow: no truth, no run
    with mlflow_run(cfg, "evaluate"):
        card = evaluate(cfg, truth)
        out = command_dir(cfg.run, "evaluate")
        logged = card | ({"rootcause": {k: v for k, v in card["rootcause"].items() if k != "pipelines"}
                          | {"chosen_scores": card["rootcause"]["pipelines"][card["rootcause"]["chosen"]]}}
                         if "rootcause" in card else {})  # one pipeline's scores: the others are in scorecard.json
        if "observer" in card:  # its per-concept lines (names with '=') stay in scorecard.json
            logged["observer"] = {k: card["observer"][k] for k in ("zero_shot", "mean_auroc", "mean_agreement",
                                                                   "seen_flagged_share")}
        log_results(logged, out / "scorecard.json", out / "metrics.json", out / "ground_truth.parquet",
                    out / FILTER_SCORES)
    return card


def main(argv: Sequence[str] | None = None) -> int:
    return run_command("evaluate", __doc__, argv, run, report)


if __name__ == "__main__":
    sys.exit(main())
