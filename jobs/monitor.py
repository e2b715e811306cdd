"""conceptlens monitor: calibrate the runtime filter, compare it honestly, attack it white-box, register the bundle.

Reads this run's clean embeddings (``embed``), adversarial embeddings (``attack``; without them the
filter detects misclassification only and adversarial detection is off), concept analysis (``analyze``) and,
when they ran, the root causes (``rootcause``) and their sentences (``explain``), which the alerts name.
Fits the filter (its concept signals from ``monitor.concepts_from``: ``vlm``, the aligned encoder features and
the VLM's image embedding, which serving then computes per request; ``aligned``, the aligned encoder features
alone, so serving runs the classifier only; the bundle records which) on ``calib`` in folds by source image, the
unsupervised baselines (max softmax, energy, Mahalanobis, relative Mahalanobis, k-NN), the stacked supervised
baseline, the same given the filter's VLM signals (``stacked same signals``) and the filter without its concept
signals (``filter without concepts``, an ablation), and evaluates everything on ``test`` (the filter's
misclassification AUROC minus each other's, paired by DeLong on the same rows): misclassification, adversarial
detection per attack and ε (attacks that flipped a correct prediction), unseen attacks (heads fitted without a
family or an ε), false alarms at the deployed thresholds, and an adaptive white-box attack on classifier + filter
(``monitor.adaptive``). Writes under
``<run>/monitor/``: ``bundle/`` (the filter, its failure modes and copies of the models it judges),
``evaluation.parquet``, ``alerts.parquet`` (per test row: verdict and the failure mode it looks like),
``metrics.json``; the bundle is registered in MLflow as ``monitor.model_name`` (``{run}``: the run's name) with alias ``monitor.alias``.
"""
from __future__ import annotations

import copy
import functools
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from conceptlens.semantic import Aligner, read_trust
from conceptlens.cli import run_command
from conceptlens.config import Config
from conceptlens.runtime.detectors import BASELINES, KNN, Detector, Stacked, detection_metrics, threshold_at_fpr
from conceptlens.pipeline.runs import Progress, command_dir, log, model_spec, run_inputs, write_metrics
from conceptlens.runtime.filter import ConceptFilter, folds, sources, successful_attacks, take
from conceptlens.pipeline.shards import ROW_BATCH_COLUMNS, read_rows
from conceptlens.pipeline.registry import model_name, register_folder
from conceptlens.jobs.attack import sample
from conceptlens.jobs.embed import load_input
from conceptlens.jobs.rootcause import concept_analysis
from conceptlens.pipeline.raydata import init_ray, map_images
from conceptlens.runtime.adaptive import AdaptiveAttacker
from conceptlens.runtime.bundle import save_bundle
from conceptlens.runtime.comparison import paired_differences, same_signal_parts, without_concepts
from conceptlens.runtime.failure_modes import FailureModes
from conceptlens.runtime.registered import FilterPyfunc
from conceptlens.pipeline.tracking import log_results, mlflow_run, run_tags

def load_filter(analysis: Path, concepts_from: str = "vlm") -> ConceptFilter:
    """A filter on the run's concept analysis, reading its concept signals from ``concepts_from`` (``aligned``:
    the encoder features through the aligner only; ``vlm``: also the VLM's image embedding); the concepts its
    trust check did not back (all of them when the VLM did not recognise the classes) are never named in the
    filter's explanations."""
    if not (analysis / "concepts.npz").is_file():
        raise FileNotFoundError(f"no concept analysis in {analysis}; run `conceptlens analyze` first")
    text = np.load(analysis / "concepts.npz")
    info = json.loads((analysis / "concepts.json").read_text())
    concepts = list(info["concepts"])
    trust = read_trust(analysis)
    unreliable = [c for c in concepts if not trust.reliable(c)] if trust else []
    if unreliable:
        log(f"monitor: the analysis' trust check did not back {len(unreliable)} of {len(concepts)} concepts; the "
            f"filter's explanations leave them out ({', '.join(unreliable[:5])}{' …' if len(unreliable) > 5 else ''})")
    sources = ("aligned", "vlm")
    return ConceptFilter(Aligner.load(analysis / "aligner.npz"), text["concepts"], text["classes"],
                         {s: text[f"{s}_mean"] for s in sources}, {s: text[f"{s}_std"] for s in sources},
                         concepts, info["classes"], unreliable=unreliable,
                         concepts_from=getattr(concepts_from, "value", concepts_from))


def fit_baselines(calib: dict, cfg: Config) -> dict[str, Detector]:
    """The unsupervised baselines, each fitted on all clean calib rows (the misclassified ones left out)."""
    wrong = calib["prediction"] != calib["label_index"]
    return {name: (cls(cfg.monitor.knn_k) if cls is KNN else cls()).fit(calib, wrong) for name, cls in BASELINES.items()}


def stacked_parts(clean: dict, cfg: Config) -> dict[str, Detector]:
    """The stacked baseline's detectors, fitted on the first fold of calib (by source image), as the filter's
    references are."""
    return fit_baselines(take(clean, folds(sources(clean), cfg.monitor.seed) == 0), cfg)


def fit_stacked(clean: dict, adversarial: dict | None, cfg: Config, parts: dict[str, Detector]) -> dict[str, Stacked]:
    """The supervised baseline, trained like the filter's heads: a logistic regression per head over its fitted
    detectors (``parts``: :func:`stacked_parts`) on the second fold of calib, with the same labels (misclassified;
    successful attacks)."""
    heads = take(clean, folds(sources(clean), cfg.monitor.seed) == 1)
    out = {"misclassified": Stacked(parts).fit(heads, heads["prediction"] != heads["label_index"])}
    if adversarial is not None:
        hits = take(adversarial, (folds(sources(adversarial), cfg.monitor.seed) == 1) & successful_attacks(adversarial))
        both = {k: np.concatenate([heads[k], hits[k]]) for k in ROW_BATCH_COLUMNS if k != "split"}
        out["adversarial"] = Stacked(parts).fit(both, np.r_[np.zeros(len(heads["prediction"]), bool),
                                                           np.ones(len(hits["prediction"]), bool)])
    return out


SAME_SIGNALS, ABLATION = "stacked same signals", "filter without concepts"
OWN = ("concept filter", "concept heatmap only", ABLATION)  # the filter and its ablations: not baselines


def head_scores(score_all, test_all: dict[str, dict]) -> dict[str, np.ndarray]:
    """A detector with a ``misclassified`` and (with attacks) an ``adversarial`` head (``score_all``: batch -> head
    -> scores) on the test batches ``test_all`` (``clean``, ``adversarial``), keyed as :func:`evaluate` reads them."""
    scored = {k: score_all(v) for k, v in test_all.items()}
    return {"clean_mis": scored["clean"]["misclassified"]} | (
        {"clean_adv": scored["clean"]["adversarial"], "adversarial": scored["adversarial"]["adversarial"]}
        if "adversarial" in test_all else {})


def paired(scores: dict[str, dict[str, np.ndarray]], wrong: np.ndarray) -> dict:
    """Misclassification AUROC of the filter minus each baseline's (``filter_vs_baselines``) and minus its ablation
    without concept signals' (``filter_concepts_add``), paired on the same clean test rows (DeLong, 95 %)."""
    ours = scores["concept filter"]["clean_mis"]
    others = {name: s["clean_mis"] for name, s in scores.items() if name not in OWN}
    return {"filter_vs_baselines": {name.replace(" ", "_"): d for name, d in paired_differences(wrong, ours, others).items()},
            "filter_concepts_add": paired_differences(wrong, ours, {ABLATION: scores[ABLATION]["clean_mis"]})[ABLATION]
                                   | {"ablation": ABLATION.replace(" ", "_")}}


def task_masks(adversarial: dict) -> dict[str, np.ndarray]:
    """``<attack>_eps<ε>`` -> the successful attacks of that attack and budget."""
    hit = successful_attacks(adversarial)
    return {f"{a}_eps{e:g}": (adversarial["attack"] == a) & (adversarial["epsilon"] == e) & hit
            for a, e in sorted(set(zip(adversarial["attack"], adversarial["epsilon"])))}


def evaluate(scores: dict[str, dict[str, np.ndarray]], clean: dict, adversarial: dict | None, fpr: float) -> list[dict]:
    """One row per (detector, task): misclassification on clean test rows; adversarial per attack and ε, only with
    adversarial rows: successful attacks on correctly classified inputs against the correctly classified clean test
    rows (the protocol of Ma et al. 2018 and Lee et al. 2018; a natural mistake flagged is not a false alarm)."""
    rows = []
    wrong = clean["prediction"] != clean["label_index"]
    for name, s in scores.items():
        rows.append({"detector": name, "task": "misclassified"} | detection_metrics(s["clean_mis"], wrong, fpr))
        for task, m in (task_masks(adversarial).items() if adversarial is not None else ()):
            rows.append({"detector": name, "task": task} | against_clean(s["clean_adv"][~wrong], s["adversarial"][m],
                                                                         fpr))
    return rows


def against_clean(clean_scores: np.ndarray, attacked_scores: np.ndarray, fpr: float) -> dict:
    """Detection metrics of attacked rows (positives) against clean rows (negatives)."""
    return detection_metrics(np.r_[clean_scores, attacked_scores],
                             np.r_[np.zeros(len(clean_scores), bool), np.ones(len(attacked_scores), bool)], fpr)


def unseen_attacks(filt: ConceptFilter, clean: dict, adversarial: dict, cfg: Config,
                   parts: dict[str, Detector]) -> list[dict]:
    """Heads and thresholds fitted without one attack family (then without one ε), tested on what was left out:
    the filter and the stacked baseline, their adversarial heads against the correctly classified clean test rows."""
    calib, test = adversarial["calib"], adversarial["test"]
    held_out = [("attack", a) for a in sorted(set(calib["attack"]))] + [
        ("epsilon", e) for e in sorted(set(calib["epsilon"]))]
    rows, hit = [], successful_attacks(test)
    correct = clean["test"]["prediction"] == clean["test"]["label_index"]
    negatives = take(clean["test"], correct)
    for column, value in held_out:
        seen = calib[column] != value
        if not seen.any() or seen.all():
            continue
        task = f"unseen_{value}" if column == "attack" else f"unseen_eps{value:g}"
        refit = copy.deepcopy(filt).fit(clean["calib"], take(calib, seen), fpr=cfg.monitor.fpr, ridge=cfg.analyze.ridge,
                                        seed=cfg.monitor.seed)
        stacked = fit_stacked(clean["calib"], take(calib, seen), cfg, parts)["adversarial"]
        left_out = take(test, (test[column] == value) & hit)
        for name, score in (("concept filter", lambda b: refit.score_all(b)["adversarial"]),
                            ("stacked", stacked.score)):
            rows.append({"detector": name, "task": task} | against_clean(score(negatives), score(left_out),
                                                                         cfg.monitor.fpr))
    return rows


def read_adversarial(folder: Path) -> tuple[dict[str, dict] | None, str | None]:
    """The calib and test rows of ``attack``'s embeddings, or ``None`` and why adversarial detection is off
    (no attack outputs, or no adversarial calib rows to fit on)."""
    if not any(folder.glob("*.parquet")):
        return None, f"no `attack` outputs in {folder} (run `conceptlens attack`, then monitor again, to add it)"
    rows = {split: read_rows(folder, [split], ["attack", "epsilon", "source_id", "clean_prediction"])
            for split in ("calib", "test")}
    if not len(rows["calib"]["prediction"]):
        return None, f"no adversarial rows of split calib in {folder} (attack.splits)"
    if not successful_attacks(rows["calib"]).any():
        return None, f"no attack in {folder} flipped a correct calib prediction: nothing to learn attacks from"
    return rows, None


def check_calibration(calib: dict) -> None:
    """A clear error when calib cannot calibrate a filter: every row right or every row wrong."""
    wrong = calib["prediction"] != calib["label_index"]
    if wrong.all():
        raise ValueError("the classifier gets every calib row wrong: its classes are probably in another order than "
                         "the labels' (set data.classes in the classifier's order), or it is not the model for this "
                         "data")
    if not wrong.any():
        raise ValueError("the classifier gets every calib row right: there are no mistakes to calibrate the "
                         "misclassification head on (use more or harder calib data)")


def write_alerts(test: dict, verdicts: np.ndarray, modes: FailureModes | None, path: Path) -> None:
    """Per test row: ``id``, ``verdict`` and the failure mode it looks like (``cluster``, -1 = no candidate;
    ``distance`` in radii; ``close_enough``), all -1/NaN/False without failure modes."""
    n = len(verdicts)
    found = modes.nearest(test) if modes is not None else {
        "cluster": np.full(n, -1, np.int64), "distance": np.full(n, np.nan, np.float32), "close_enough": np.zeros(n, bool)}
    pq.write_table(pa.table({"id": test["id"], "verdict": verdicts.astype(str)} | found), path)


def adaptive(cfg: Config, filt: ConceptFilter, bundle: Path, clean_test: dict, pgd: dict | None) -> dict:
    """The white-box attack on classifier + filter (:mod:`conceptlens.runtime.adaptive`) on a seeded sample of
    ``monitor.adaptive.rows`` test images, per ε: of the inputs classified right when clean, the share it fools
    the classifier on and the share it fools classifier and filter on (the filter accepts); the filter's AUROC
    (``ConceptFilter.score``) on its successful attacks against the correctly classified clean test rows; beside
    them the same two numbers for non-adaptive PGD at the same ε (``pgd``: the attack embeddings of test, when
    `attack` ran PGD at that ε)."""
    settings = cfg.monitor.adaptive
    rows = sample(load_input(cfg), ["test"], settings.rows, cfg.attack.seed)
    log(f"monitor: adaptive white-box attack on {rows.num_rows} test inputs at ε = "
        f"{', '.join(f'{e:g}' for e in settings.epsilons)}/255, {settings.steps} steps")
    init_ray(cfg.ray)
    factory = functools.partial(AdaptiveAttacker, str(bundle), list(settings.epsilons), steps=settings.steps,
                                weight=settings.weight, seed=cfg.attack.seed, device=cfg.run.device)
    progress, batches = Progress("monitor: adaptive attack", rows.num_rows * len(settings.epsilons)), []
    for batch in map_images(rows, factory, cfg.embed, batch_size=settings.batch_size, image_size=cfg.data.image_size):
        batches.append({k: v for k, v in batch.items() if k != "image"})
        progress.update(len(batch["epsilon"]))
    found = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    correct = clean_test["prediction"] == clean_test["label_index"]
    negatives = filt.score(take(clean_test, correct))
    accepted = filt.verdicts(found)["verdict"] == "accept"
    scores, out = filt.score(found), {}
    for eps in settings.epsilons:
        mine = (found["epsilon"] == eps) & (found["clean_prediction"] == found["label_index"])
        fooled = mine & (found["prediction"] != found["label_index"])
        out[f"eps{eps:g}"] = {"correct": int(mine.sum()), "success_vs_classifier": float(fooled.sum() / max(mine.sum(), 1)),
                              "success_vs_filter": float((fooled & accepted).sum() / max(mine.sum(), 1)),
                              "filter_auroc": against_clean(negatives, scores[fooled], cfg.monitor.fpr)["auroc"]}
        plain = (pgd["attack"] == "pgd") & (pgd["epsilon"] == eps) if pgd is not None else None
        if plain is not None and plain.any():
            hits, tried = successful_attacks(pgd) & plain, plain & (pgd["clean_prediction"] == pgd["label_index"])
            passed = hits & (filt.verdicts(pgd)["verdict"] == "accept")
            out[f"eps{eps:g}"] |= {"pgd_success_vs_filter": float(passed.sum() / max(tried.sum(), 1)),
                                   "pgd_filter_auroc": against_clean(negatives, filt.score(take(pgd, hits)),
                                                                     cfg.monitor.fpr)["auroc"]}
    return out


def monitor(cfg: Config) -> dict:
    out = command_dir(cfg.run, "monitor")
    run_dir = Path(cfg.run.root) / cfg.run.name
    clean = {split: read_rows(run_dir / "embed" / "embeddings", [split], ["id"]) for split in ("calib", "test")}
    empty = [split for split, rows in clean.items() if not len(rows["prediction"])]
    if empty:
        raise ValueError(f"no rows of split(s) {empty} in {run_dir / 'embed' / 'embeddings'}: monitor calibrates on "
                         f"calib and evaluates on test (data without splits: keep data.calib_share inside (0, 1))")
    check_calibration(clean["calib"])
    adversarial, off = read_adversarial(run_dir / "attack" / "embeddings")
    log(f"monitor: calib {len(clean['calib']['prediction'])} clean + "
        f"{len(adversarial['calib']['prediction']) if adversarial else 0} adversarial rows; "
        f"test {len(clean['test']['prediction'])} + {len(adversarial['test']['prediction']) if adversarial else 0}")
    if off:
        log(f"monitor: adversarial detection is off: {off}")
    log(f"monitor: concept signals from {cfg.monitor.concepts_from.value} (monitor.concepts_from)")
    filt = load_filter(run_dir / "analyze", cfg.monitor.concepts_from).fit(clean["calib"], adversarial["calib"] if adversarial else None,
                                                fpr=cfg.monitor.fpr, ridge=cfg.analyze.ridge, seed=cfg.monitor.seed)

    # per detector: "clean_mis" (clean test rows, misclassification score); with attacks also "clean_adv" and
    # "adversarial" (clean and adversarial test rows, adversarial score)
    scores = {}
    test_all = {"clean": clean["test"]} | ({"adversarial": adversarial["test"]} if adversarial else {})
    scores["concept filter"] = head_scores(filt.score_all, test_all)
    signals = {k: dict(zip(filt.signal_names, filt.signals(v).T)) for k, v in test_all.items()}
    scores["concept heatmap only"] = {"clean_mis": signals["clean"]["cos_incorrect"] - signals["clean"]["cos_correct"]}
    if adversarial:
        scores["concept heatmap only"] |= {k2: signals[k]["cos_adversarial"] - signals[k]["cos_correct"]
                                           for k, k2 in (("clean", "clean_adv"), ("adversarial", "adversarial"))}
    ablation = without_concepts(filt).fit(clean["calib"], adversarial["calib"] if adversarial else None,
                                          fpr=cfg.monitor.fpr, ridge=cfg.analyze.ridge, seed=cfg.monitor.seed)
    scores[ABLATION] = head_scores(ablation.score_all, test_all)
    for name, detector in fit_baselines(clean["calib"], cfg).items():
        s = {k: detector.score(v) for k, v in test_all.items()}
        scores[name] = {"clean_mis": s["clean"]} | (
            {"clean_adv": s["clean"], "adversarial": s["adversarial"]} if adversarial else {})
    parts = stacked_parts(clean["calib"], cfg)
    for name, given in (("stacked", parts), (SAME_SIGNALS, same_signal_parts(filt, parts))):
        stacked = fit_stacked(clean["calib"], adversarial["calib"] if adversarial else None, cfg, given)
        scores[name] = head_scores(lambda b, heads=stacked: {h: s.score(b) for h, s in heads.items()}, test_all)
    table = evaluate(scores, clean["test"], adversarial["test"] if adversarial else None, cfg.monitor.fpr)
    if adversarial:
        table += unseen_attacks(filt, clean, adversarial, cfg, parts)
    pq.write_table(pa.Table.from_pylist(table), out / "evaluation.parquet")

    verdicts = filt.verdicts(clean["test"])["verdict"]
    correct = clean["test"]["prediction"] == clean["test"]["label_index"]
    accepted = verdicts == "accept"
    msp = -BASELINES["msp"]().score(clean["test"])  # MSP at the same false-alarm rate, for comparison
    msp_calib = -BASELINES["msp"]().score(clean["calib"])
    calib_wrong = clean["calib"]["prediction"] != clean["calib"]["label_index"]
    msp_accepts = -msp < threshold_at_fpr(-msp_calib[~calib_wrong], cfg.monitor.fpr)
    false_alarms = float((~accepted[correct]).mean())
    metrics = {
        "concepts_from": filt.concepts_from, "fpr_target": cfg.monitor.fpr, "thresholds": filt.thresholds,
        "test_accuracy": float(correct.mean()),
        "accepted": {"share": float(accepted.mean()), "accuracy": float(correct[accepted].mean()),
                     "false_alarm_rate": false_alarms},
        "false_alarm_rate": {"target": cfg.monitor.fpr, "test": false_alarms,
                             "gap_points": 100 * (false_alarms - cfg.monitor.fpr)},
        "msp_accepted": {"share": float(msp_accepts.mean()), "accuracy": float(correct[msp_accepts].mean())},
        "heads": list(filt.heads),
        "verdicts": {v: int((verdicts == v).sum()) for v in filt.verdict_names},
        "adversarial_positives": "attacks that flipped a correct prediction",
        "detection": {f"{r['detector'].replace(' ', '_')}.{r['task']}": {k: r[k] for k in ("auroc", "aupr", "tpr_at_fpr")}
                      for r in table},
    } | paired(scores, ~correct)
    bundle = save_bundle(filt, out / "bundle", model_spec(cfg), image_size=cfg.data.image_size, run=cfg.run.name)
    metrics["bundle"] = str(bundle.resolve())
    modes = FailureModes.from_outputs(run_dir / "rootcause", run_dir / "explain", clean["calib"],
                                      concepts=concept_analysis(cfg), log=log, vlm=filt.needs_vlm)
    if modes is not None:
        modes.save(bundle)
        metrics["failure_modes"] = modes.describe()
    write_alerts(clean["test"], verdicts, modes, out / "alerts.parquet")
    if cfg.monitor.adaptive.rows:
        metrics["adaptive"] = adaptive(cfg, filt, bundle, clean["test"], adversarial["test"] if adversarial else None)
    if off:
        metrics["adversarial_detection"] = f"off: {off}"
    write_metrics(out, metrics)
    return metrics | {"table": table}


def report(metrics: dict) -> str:
    table = [r for r in metrics["table"] if not r["task"].startswith("unseen_")]
    tasks = list(dict.fromkeys(r["task"] for r in table))
    detectors = list(dict.fromkeys(r["detector"] for r in table))
    cell = {(r["detector"], r["task"]): r for r in table}
    short = {t: t.replace("misclassified", "miscls").replace("_eps", "@") for t in tasks}
    lines = [f"AUROC on test (TPR at {metrics['fpr_target']:.0%} FPR for misclassification in brackets; adversarial: "
             f"{metrics['adversarial_positives']}, against correctly classified clean test rows)",
             f"{'detector':<24}" + "".join(f"{short[t]:>{14 if t == 'misclassified' else 9}}" for t in tasks)]
    for d in detectors:
        mis = cell[(d, "misclassified")]
        row = f"{d:<24}{mis['auroc']:>7.3f} ({mis['tpr_at_fpr']:.2f})"
        row += "".join(f"{cell[(d, t)]['auroc']:>9.3f}" for t in tasks[1:])
        lines.append(row)
    unseen = [r for r in metrics["table"] if r["task"].startswith("unseen_")]
    if unseen:
        lines.append("unseen attacks (heads fitted without it), AUROC: " + "; ".join(
            f"{t.removeprefix('unseen_')}: " + ", ".join(f"{r['detector']} {r['auroc']:.3f}" for r in unseen
                                                        if r["task"] == t)
            for t in dict.fromkeys(r["task"] for r in unseen)))
    if "filter_vs_baselines" in metrics:
        interval = lambda d: f"{d['difference']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}], p {d['p']:.2g}"
        lines.append("filter minus baseline, misclassification AUROC (paired DeLong, 95 %): " + "; ".join(
            f"{name} {interval(d)}" for name, d in metrics["filter_vs_baselines"].items()))
        lines.append(f"what the concept signals add (filter minus filter without them): "
                     f"{interval(metrics['filter_concepts_add'])}")
    a, m, f = metrics["accepted"], metrics["msp_accepted"], metrics["false_alarm_rate"]
    lines.append(f"test accuracy {metrics['test_accuracy']:.3f}; the filter accepts {a['share']:.1%} with accuracy "
                 f"{a['accuracy']:.3f}; false alarms on test {f['test']:.1%} (target {f['target']:.1%}); MSP at the "
                 f"same FPR accepts {m['share']:.1%} with accuracy {m['accuracy']:.3f}")
    for eps, a in metrics.get("adaptive", {}).items():
        pgd = (f" (non-adaptive PGD: {a['pgd_success_vs_filter']:.0%}, AUROC {a['pgd_filter_auroc']:.3f})"
               if "pgd_filter_auroc" in a else "")
        lines.append(f"adaptive white-box attack {eps.replace('eps', 'ε = ')}/255 on {a['correct']} correct test inputs: "
                     f"fools the classifier on {a['success_vs_classifier']:.0%}, classifier and filter on "
                     f"{a['success_vs_filter']:.0%}; filter AUROC on its successes {a['filter_auroc']:.3f}{pgd}")
    if "adversarial_detection" in metrics:
        lines.append(f"adversarial detection {metrics['adversarial_detection']}")
    return "\n".join(lines)


def run(cfg: Config) -> dict:
    cfg = run_inputs(cfg)  # the models and image size the embeddings were made with, for the bundle
    if cfg.monitor.model_name:
        model_name(cfg.monitor.model_name, cfg.run.name)  # a bad name fails now, not after the work
    with mlflow_run(cfg, "monitor"):
        metrics = monitor(cfg)
        out = command_dir(cfg.run, "monitor")
        register = bool(cfg.monitor.model_name)  # a registered bundle is stored once, as the model's files
        log_results({k: v for k, v in metrics.items() if k != "table"}, out / "metrics.json",
                    out / "evaluation.parquet", out / "alerts.parquet", *([] if register else [out / "bundle"]))
        if register:
            metrics["registered"] = register_folder(out / "bundle", FilterPyfunc(),
                                                   model_name(cfg.monitor.model_name, cfg.run.name),
                                                   cfg.monitor.alias, tags=run_tags(cfg))
            log(f"monitor: registered {metrics['registered']}")
    return metrics


def main(argv: Sequence[str] | None = None) -> int:
    return run_command("monitor", __doc__, argv, run, report)


if __name__ == "__main__":
    sys.exit(main())
