"""conceptlens neurons: the neurons behind each class's mistakes, what they encode, what they look like, and a
repaired decision layer (NeuroInspect, METHODS.md §2).

1. Counterfactuals: every mistake of ``neurons.fit_split`` (its training part) gets the smallest sparse shift
   of its pooled features that makes the head predict its class, all solved as one batched problem; each
   votes for the neurons it had to raise (insufficient) or lower (excessive).
2. Neurons in words: on ``neurons.eval_split`` (held out), the concepts each voted neuron's activation
   follows within a class (partial correlation with the VLM's concept scores, intervals, BH).
3. CLIP-Illusion: class-conditional images of each class's top neurons beside plain activation
   maximisation and where the neuron fires, on a Ray actor pool; one PNG grid per class.
4. Repair: only the head is trained (the retaining-ratio loss on each class's top insufficient neurons, and
   the baselines the same way) on ``fit_split``, the checkpoint chosen on its validation part; accuracy
   before/after on ``eval_split``. The repaired classifier is registered in MLflow as a new version of the
   classifier, with its lineage.

Outputs under ``<run>/neurons/``: ``neurons.parquet``, ``repair.parquet`` (accuracy per method and class),
``predictions.parquet`` (eval rows, each method's prediction), ``classifier/`` (the repaired model),
``figures/``, ``metrics.json``.
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
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from conceptlens.cli import run_command
from conceptlens.config import Config, EmbedConfig
from conceptlens.jobs.analyze import class_names
from conceptlens.models import Classifier, file_digest, load_concepts
from conceptlens.models.registered import ClassifierPyfunc, write_classifier_folder
from conceptlens.neurons import (INSUFFICIENT, LOSSES, RepairSettings, SolverSettings, Visualiser,
                                 correlate, group_softmax, solve, train_head, vote)
from conceptlens.pipeline.datasets import id_unit
from conceptlens.pipeline.raydata import init_ray, map_rows
from conceptlens.pipeline.registry import find_version, model_name, register_folder
from conceptlens.pipeline.runs import (Progress, analyze_dir, command_dir, embeddings_table, log, model_spec,
                                       run_inputs, write_metrics)
from conceptlens.pipeline.shards import read_rows
from conceptlens.pipeline.tracking import log_results, mlflow_run, run_tags
from conceptlens.report.figures import plot_neuron_grid
from conceptlens.semantic import read_trust


def check_settings(cfg: Config, classes: list[str]) -> None:
    nc = cfg.neurons
    if nc.fit_split == nc.eval_split:
        raise ValueError(f"neurons.fit_split and neurons.eval_split are both {nc.fit_split!r}: the numbers "
                         f"before/after must come from rows the repair never saw")
    for key, value in [("neurons.repair.loss", nc.repair.loss)] + [("neurons.repair.baselines", b)
                                                                    for b in nc.repair.baselines]:
        if value not in LOSSES:
            raise ValueError(f"{key}: unknown loss {value!r}; choose from {list(LOSSES)}")
    unknown = sorted(set(nc.repair.classes) - set(classes))
    if unknown:
        raise ValueError(f"neurons.repair.classes: {unknown} are not classes of this run ({classes})")
    if not 0 < nc.val_share < 1:
        raise ValueError(f"neurons.val_share must lie in (0, 1), got {nc.val_share}")


def load_rows(cfg: Config) -> tuple[dict, list[str], dict[str, np.ndarray], Path]:
    """The fit and eval rows, the class order, the masks ``train``, ``val`` (fit rows by a hash of the id)
    and ``held`` (eval rows), and the embeddings table they come from."""
    nc = cfg.neurons
    folder = embeddings_table(cfg, nc.embeddings, "neurons.embeddings")
    classes = class_names(cfg, folder)
    rows = read_rows(folder, [nc.fit_split, nc.eval_split], extra=["id"])
    split = rows["split"].astype(str)
    for name, key in ((nc.fit_split, "fit_split"), (nc.eval_split, "eval_split")):
        if not (split == name).any():
            raise ValueError(f"no rows of split {name!r} in {folder} (neurons.{key})")
    val = np.array([id_unit(i) < nc.val_share for i in rows["id"]])
    fit = split == nc.fit_split
    return rows, classes, {"train": fit & ~val, "val": fit & val, "held": split == nc.eval_split}, folder


def explain_mistakes(cfg: Config, head: torch.nn.Module, rows: dict, train: np.ndarray):
    """Counterfactuals of the training rows' mistakes and their votes; the seconds the solver took."""
    c = cfg.neurons.counterfactual
    wrong = train & (rows["label_index"] != rows["prediction"])
    if not wrong.any():
        raise ValueError(f"the classifier makes no mistake on the {train.sum()} training rows of "
                         f"{cfg.neurons.fit_split}: nothing to explain")
    settings = SolverSettings(c.alpha, c.beta, c.lr, c.momentum, c.max_steps)
    start = time.time()
    cf = solve(head, rows["features"][wrong], rows["label_index"][wrong], settings)
    seconds = time.time() - start
    log(f"neurons: {wrong.sum()} mistakes explained in {seconds:.1f} s, {cf.flipped.mean():.0%} flipped "
        f"(median {np.median(cf.steps):.0f} steps)")
    return cf, vote(cf, rows["label_index"][wrong], top=c.top, min_share=c.min_share), seconds


def concept_scores(cfg: Config, embeddings: np.ndarray) -> tuple[list[str], np.ndarray]:
    """The concept names and the rows' VLM concept scores (softmax over each group's values)."""
    concepts = load_concepts(cfg.neurons.concepts or cfg.analyze.concepts)
    with torch.no_grad():
        bank = concepts.bank(model_spec(cfg).vlm()).embeddings.numpy()
    return concepts.names, group_softmax(embeddings @ bank.T, concepts.names, cfg.neurons.score_scale)


def neuron_table(cfg: Config, votes, rows: dict, held: np.ndarray, classes: list[str]) -> pa.Table:
    """One row per voted (class, neuron, direction) with its top concepts on the held-out rows; only concepts
    analyze's trust check backs (none when the VLM does not recognise the classes) name a neuron."""
    names, scores = concept_scores(cfg, rows["vlm_embedding"][held])
    trust = read_trust(analyze_dir(cfg))
    backed = [j for j, c in enumerate(names) if trust is None or trust.reliable(c)]
    if len(backed) < len(names):
        log(f"neurons: {len(names) - len(backed)} of {len(names)} concepts are not backed by analyze's trust check "
            f"and name no neuron{'' if backed else ': the VLM does not recognise these classes'}")
    voted = np.unique(votes.neuron)
    if backed:
        found = correlate(rows["features"][held][:, voted], scores[:, backed], rows["label_index"][held])
        position = {n: i for i, n in enumerate(voted)}
        tops = [found.top(position[n], [names[j] for j in backed], cfg.neurons.top_concepts, cfg.neurons.alpha)
                for n in votes.neuron]
    else:
        tops = [[] for _ in votes.neuron]
    return pa.table({
        "class": [classes[c] for c in votes.target], "class_index": votes.target, "neuron": votes.neuron,
        "direction": votes.direction.tolist(), "votes": votes.votes, "share": votes.share,
        "mistakes": votes.mistakes, "never_flipped": votes.never_flipped,
        "concepts": [[t["concept"] for t in top] for top in tops], "r": [[t["r"] for t in top] for top in tops],
        "low": [[t["low"] for t in top] for top in tops], "high": [[t["high"] for t in top] for top in tops],
        "q": [[t["q"] for t in top] for top in tops],
        "description": [describe(n, top, named=bool(backed)) for n, top in zip(votes.neuron, tops)]})


def describe(neuron: int, top: list[dict], named: bool = True) -> str:
    """``n213: background=water (r = 0.71)``, ``n213: no concept`` when none passes the FDR, ``n213: not named``
    when the trust check backs no concept (``named`` False)."""
    if not named:
        return f"n{neuron}: not named (the VLM is not trusted)"
    if not top:
        return f"n{neuron}: no concept"
    return f"n{neuron}: " + ", ".join(f"{t['concept']} (r = {t['r']:.2f})" for t in top)


def short(row: dict) -> str:
    """A neuron row of ``neurons.parquet`` by its top concept only: ``n213: background=water (r = 0.71)``."""
    if not row["concepts"]:
        return row["description"]  # no concept, or not named at all
    return describe(row["neuron"], [{"concept": row["concepts"][0], "r": row["r"][0]}])


def chosen_neurons(cfg: Config, votes, classes: list[str]) -> dict[int, list[int]]:
    """Class index -> the top insufficient neurons whose reliance the repair removes."""
    edited = [classes.index(c) for c in cfg.neurons.repair.classes] or sorted(set(votes.target.tolist()))
    chosen = {c: votes.of(c, INSUFFICIENT)[:cfg.neurons.repair.neurons].tolist() for c in edited}
    return {c: n for c, n in chosen.items() if n}


def repair(cfg: Config, head: torch.nn.Module, rows: dict, masks: dict, chosen: dict, classes: list[str]):
    """Each method's trained head and its predictions on the held-out rows (``base`` = the head as it is)."""
    r = cfg.neurons.repair
    f, y = rows["features"], rows["label_index"]
    heads, history, methods = {}, {}, list(dict.fromkeys([r.loss, *r.baselines]))
    progress = Progress("neurons: repair", len(methods) * r.epochs, unit="epochs")
    for method in methods:
        settings = RepairSettings(method, r.lam, r.gamma, r.focal_gamma, r.epochs, r.lr, r.batch_size, cfg.neurons.seed)
        done = train_head(head, (f[masks["train"]], y[masks["train"]]), (f[masks["val"]], y[masks["val"]]),
                          neurons=chosen, num_classes=len(classes), settings=settings, progress=progress.update)
        heads[method], history[method] = done.head, {"epoch": done.epoch, "history": done.history}
        log(f"neurons: repair {method}: epoch {done.epoch} chosen on validation")
    held = torch.as_tensor(f[masks["held"]])
    with torch.no_grad():
        predictions = {m: h(held).argmax(1).numpy() for m, h in {"base": head, **heads}.items()}
    return heads, predictions, history


def accuracy_table(predictions: dict[str, np.ndarray], labels: np.ndarray, classes: list[str]) -> pa.Table:
    """Accuracy per method, overall (class ``all``) and per class, with the rows behind it."""
    out = {"method": [], "class": [], "rows": [], "accuracy": []}
    for method, predicted in predictions.items():
        for name, mine in [("all", np.ones(len(labels), bool))] + [(c, labels == i) for i, c in enumerate(classes)]:
            out["method"].append(method), out["class"].append(name), out["rows"].append(int(mine.sum()))
            out["accuracy"].append(float((predicted[mine] == labels[mine]).mean()) if mine.any() else None)
    return pa.table(out)


def visualise(cfg: Config, table: pa.Table, classes: list[str], out: Path) -> dict:
    """CLIP-Illusion grids of each class's top insufficient neurons (a Ray actor pool, one class per call);
    the mean activation gain over the starting image per method."""
    v = cfg.neurons.visualise
    wanted = {c: [] for c in classes}
    for row in table.filter(pc.equal(table["direction"], INSUFFICIENT)).to_pylist():
        if len(wanted[row["class"]]) < v.neurons:
            wanted[row["class"]].append(row)
    wanted = {c: picked for c, picked in wanted.items() if picked}
    if not v.neurons or not wanted:
        return {}
    items = pa.table({"class_index": [classes.index(c) for c in wanted],
                      "class_text": [f"a photo of a {c}" for c in wanted],
                      "neurons": [[r["neuron"] for r in p] + [-1] * (v.neurons - len(p)) for p in wanted.values()],
                      "seed": [cfg.neurons.seed + classes.index(c) for c in wanted]})
    settings = {k: getattr(v, k) for k in ("samples", "steps", "lr", "gamma", "eps", "ce_weight", "augmentations")}
    pool = EmbedConfig(actors=min(v.actors, len(wanted)), actor_num_cpus=v.actor_num_cpus,
                       num_gpus=cfg.embed.num_gpus, torch_threads=cfg.embed.torch_threads)
    (out / "figures").mkdir(exist_ok=True)
    gains: list[dict] = []
    factory = functools.partial(Visualiser, model_spec(cfg), settings, cfg.run.device)
    with Progress("neurons: CLIP-Illusion", len(wanted), unit="classes") as progress:
        init_ray(cfg.ray)
        for batch in map_rows(items, factory, pool, batch_size=1):
            for i, index in enumerate(batch["class_index"]):
                rows = wanted[classes[index]]
                n = len(rows)
                plot_neuron_grid(out / "figures" / f"class_{classes[index]}.png",
                                 illusion=batch["illusion"][i][:n], baseline=batch["baseline"][i][:n],
                                 illusion_mask=batch["illusion_mask"][i][:n],
                                 labels=[short(r) for r in rows],
                                 title=f"{classes[index]}: the neurons its mistakes lack")
                start = batch["start_activation"][i][:n]
                gains.append({m: float(np.mean(batch[f"{m}_activation"][i][:n] - start))
                              for m in ("illusion", "baseline")}
                             | {"kept_class": float(np.mean(batch["illusion_prediction"][i][:n] == index))})
                progress.update(1)
    return {k: float(np.mean([g[k] for g in gains])) for k in gains[0]}


def save_repaired(cfg: Config, repaired: Classifier, chosen: dict, classes: list[str], epoch: int,
                  folder: Path) -> dict:
    """Write the repaired classifier with its card and lineage (base model by content, neurons, λ, γ); the
    lineage."""
    spec = model_spec(cfg)
    base = spec.classifier_checkpoint
    lineage = {"base_sha256": file_digest(base) if base else spec.classifier_weights,
               "loss": cfg.neurons.repair.loss, "neurons": {classes[c]: n for c, n in chosen.items()},
               "lambda": cfg.neurons.repair.lam, "gamma": cfg.neurons.repair.gamma, "epoch": epoch}
    write_classifier_folder(folder, repaired, {"arch": cfg.classifier.arch, "head": cfg.classifier.head,
                                               "num_classes": len(classes), "image_size": cfg.data.image_size,
                                               "preprocess": cfg.classifier.preprocess,
                                               "classes": classes, "lineage": lineage})
    return lineage


def neurons(cfg: Config) -> dict:
    out = command_dir(cfg.run, "neurons")
    rows, classes, masks, folder = load_rows(cfg)
    clf = model_spec(cfg).classifier()
    cf, votes, seconds = explain_mistakes(cfg, clf.head, rows, masks["train"])
    table = neuron_table(cfg, votes, rows, masks["held"], classes)
    pq.write_table(table, out / "neurons.parquet")
    chosen = chosen_neurons(cfg, votes, classes)
    heads, predictions, history = repair(cfg, clf.head, rows, masks, chosen, classes)
    labels = rows["label_index"][masks["held"]]
    accuracy = accuracy_table(predictions, labels, classes)
    pq.write_table(accuracy, out / "repair.parquet")
    pq.write_table(pa.table({"id": rows["id"][masks["held"]], "label_index": labels, **predictions}),
                   out / "predictions.parquet")
    edit = cfg.neurons.repair.loss
    repaired = Classifier(clf.encoder, heads[edit], clf.preprocess)
    lineage = save_repaired(cfg, repaired, chosen, classes, history[edit]["epoch"], out / "classifier")
    figures = visualise(cfg, table, classes, out)
    overall = {r["method"]: r["accuracy"] for r in accuracy.to_pylist() if r["class"] == "all"}
    metrics = {"mistakes": int(len(cf.flipped)), "flipped": float(cf.flipped.mean()),
               "never_flipped": int((~cf.flipped).sum()), "solver_seconds": seconds,
               "voted_neurons": table.num_rows, "classes": classes, "embeddings": str(folder.resolve()),
               "eval_split": cfg.neurons.eval_split, "rows": {k: int(m.sum()) for k, m in masks.items()},
               "top_neurons": {c: [short(r) for r in table.to_pylist() if r["class"] == c
                                   and r["direction"] == INSUFFICIENT][:3] for c in classes},
               "repair": {"edit": edit, "neurons": lineage["neurons"], "accuracy": overall, "history": history},
               "visualisation": figures, "classifier": str((out / "classifier").resolve())}
    write_metrics(out, metrics)
    return metrics


MAX_TAG = 5000  # characters of an MLflow tag value (the limit of older servers)


def register(cfg: Config, metrics: dict) -> str:
    """Register the base classifier (once, by its content) and the repaired one as the next version of
    ``neurons.model_name``, tagged with its lineage; point ``neurons.alias`` at it."""
    name, folder = model_name(cfg.neurons.model_name, cfg.run.name), Path(metrics["classifier"])
    card = json.loads((folder / "classifier.json").read_text())
    base_sha = card["lineage"]["base_sha256"] or "unknown"
    base = find_version(name, "sha256", base_sha)
    if base is None:
        base_folder = folder.parent / "base_classifier"
        write_classifier_folder(base_folder, model_spec(cfg).classifier(), {k: v for k, v in card.items()
                                                                            if k != "lineage"})
        register_folder(base_folder, ClassifierPyfunc(), name, "base", tags={"sha256": base_sha}, model="classifier")
        base = find_version(name, "sha256", base_sha)  # the version itself: an alias moves, lineage must not
    lineage = {f"lineage.{k}": json.dumps(v) if isinstance(v, dict) else str(v) for k, v in card["lineage"].items()}
    if len(lineage["lineage.neurons"]) > MAX_TAG:  # many classes: the card in the model's files has them all
        lineage["lineage.neurons"] = f"{len(card['lineage']['neurons'])} classes: see classifier.json"
    return register_folder(folder, ClassifierPyfunc(), name, cfg.neurons.alias, model="classifier",
                           tags=run_tags(cfg) | lineage | {"lineage.base_model": base,
                                                           "sha256": file_digest(folder / "classifier.pt")})


def report(metrics: dict) -> str:
    lines = [f"{metrics['mistakes']} mistakes explained ({metrics['flipped']:.0%} flipped, "
             f"{metrics['never_flipped']} never); {metrics['voted_neurons']} voted neurons"]
    for c, described in metrics["top_neurons"].items():
        if described:
            lines.append(f"  {c:<10} " + "; ".join(described))
    acc = metrics["repair"]["accuracy"]
    lines.append("held-out accuracy: " + ", ".join(f"{m} {a:.3f}" for m, a in acc.items()))
    if metrics.get("registered"):
        lines.append(f"repaired classifier: {metrics['registered']}")
    return "\n".join(lines)


def run(cfg: Config) -> dict:
    cfg = run_inputs(cfg)
    check_settings(cfg, class_names(cfg, embeddings_table(cfg, cfg.neurons.embeddings, "neurons.embeddings")))
    if cfg.neurons.model_name:
        model_name(cfg.neurons.model_name, cfg.run.name)  # a bad name fails now, not after the work
    with mlflow_run(cfg, "neurons"):
        metrics = neurons(cfg)
        out = command_dir(cfg.run, "neurons")
        log_results({k: v for k, v in metrics.items() if k != "classes"}, out / "metrics.json",
                    out / "neurons.parquet", out / "repair.parquet", out / "figures")
        if cfg.neurons.model_name:
            metrics["registered"] = register(cfg, metrics)
            write_metrics(out, metrics)
            log(f"neurons: registered {metrics['registered']}")
    return metrics


def main(argv: Sequence[str] | None = None) -> int:
    return run_command("neurons", __doc__, argv, run, report)


if __name__ == "__main__":
    sys.exit(main())
