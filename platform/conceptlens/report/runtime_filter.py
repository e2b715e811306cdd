"""The runtime filter for the page (``monitor``'s outputs): the detectors' AUROCs per task
(``evaluation.parquet``), the filter's deployed operating point (``metrics.json``), ROC curves and the
accepted-accuracy trade-off (accuracy of the inputs a filter accepts against the share it rejects, the concept
filter against max-softmax), the curves from the filter bundle re-scoring the clean test rows of the embeddings
table (and the attacked ones of ``attack``, when it ran)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from sklearn.metrics import roc_auc_score, roc_curve

from conceptlens.pipeline.runs import log
from conceptlens.pipeline.shards import read_rows
from conceptlens.report.outputs import finite, read_json
from conceptlens.report.svg import line_chart
from conceptlens.runtime import BASELINES, ConceptFilter
from conceptlens.runtime.filter import successful_attacks

CURVE_POINTS = 120  # points per drawn curve: enough for a smooth line, few enough for a small page
MAX_REJECTED = 0.5  # the trade-off curve's x range: rejecting more than half is no filter


def auroc_table(path: Path) -> dict | None:
    """``{"tasks": [...], "rows": [{"detector", "cells": [{"auroc", "best"}]}]}`` from ``evaluation.parquet``:
    one row per detector, one column per task, the best AUROC of each task marked."""
    if not path.is_file():
        return None
    rows = pq.read_table(path, columns=["detector", "task", "auroc"]).to_pylist()
    detectors = list(dict.fromkeys(r["detector"] for r in rows))
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    value = {(r["detector"], r["task"]): finite(r["auroc"]) for r in rows}
    best = {t: max((value[(d, t)] for d in detectors if value.get((d, t)) is not None), default=None) for t in tasks}
    return {"tasks": tasks, "rows": [{"detector": d, "cells": [
        {"auroc": value.get((d, t)), "best": value.get((d, t)) is not None and value.get((d, t)) == best[t]}
        for t in tasks]} for d in detectors]}


def thin(x: np.ndarray, y: np.ndarray, points: int = CURVE_POINTS) -> tuple[list[float], list[float]]:
    """At most ``points`` points of a curve, evenly spaced along it, the first and last kept."""
    if len(x) <= points:
        return x.tolist(), y.tolist()
    keep = np.unique(np.linspace(0, len(x) - 1, points).round().astype(int))
    return x[keep].tolist(), y[keep].tolist()


def roc_line(label: str, scores: np.ndarray, defective: np.ndarray) -> dict | None:
    """One ROC curve ``{"label" (with its AUROC), "x" (FPR), "y" (TPR), "auroc"}``, None with one class only."""
    if defective.all() or not defective.any():
        return None
    fpr, tpr, _ = roc_curve(defective, scores)
    auroc = float(roc_auc_score(defective, scores))
    x, y = thin(fpr, tpr)
    return {"label": f"{label} (AUROC {auroc:.3f})", "x": x, "y": y, "auroc": auroc}


def accepted_accuracy(scores: np.ndarray, correct: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """Accuracy of the rows kept when the share ``shares[i]`` with the highest scores (most likely defective) is
    rejected: ``float (len(shares),)``, NaN where nothing is kept."""
    order = np.argsort(-scores, kind="stable")
    kept_correct = np.cumsum(correct[order][::-1])[::-1]  # correct rows among order[i:]
    n = len(scores)
    out = np.full(len(shares), np.nan)
    for i, share in enumerate(shares):
        start = int(round(share * n))
        if start < n:
            out[i] = kept_correct[start] / (n - start)
    return out


def curves(run: Path, metrics: dict) -> dict:
    """The ROC and trade-off figures (inline SVG), or ``{"curves_missing": why}`` without a bundle or embeddings."""
    bundle = run / "monitor" / "bundle"
    if not (bundle / "filter.json").is_file() and metrics.get("bundle"):
        bundle = Path(metrics["bundle"])
    embeddings = run / "embed" / "embeddings"
    if not (bundle / "filter.json").is_file() or not any(embeddings.glob("*.parquet")):
        return {"curves_missing": f"no filter bundle in {run / 'monitor' / 'bundle'} or no embeddings in {embeddings}"}
    filt = ConceptFilter.load(bundle)
    test = read_rows(embeddings, ["test"])
    if not len(test["prediction"]):
        return {"curves_missing": f"no test rows in {embeddings}"}
    correct = test["prediction"] == test["label_index"]
    heads = filt.score_all(test)
    msp = BASELINES["msp"]().score(test)
    figures, aurocs = [], {}
    lines = [roc_line("concept filter", heads["misclassified"], ~correct), roc_line("max softmax (MSP)", msp, ~correct)]
    lines = [line for line in lines if line]
    if lines:
        aurocs["misclassified"] = {"concept filter": lines[0]["auroc"]}
        figures.append(line_chart(lines, title="ROC: misclassified test inputs", xlabel="false-alarm rate (correct "
                                  "inputs flagged)", ylabel="share of errors flagged", y_range=(0, 1), diagonal=True))
    adversarial = run / "attack" / "embeddings"
    if "adversarial" in heads and any(adversarial.glob("*.parquet")):
        attacked = read_rows(adversarial, ["test"], ["attack", "epsilon", "clean_prediction"])
        hit = successful_attacks(attacked)
        if hit.any():
            attacked_scores = filt.score_all(attacked)["adversarial"]
            negatives = heads["adversarial"][correct]
            lines = []
            for eps in sorted(set(attacked["epsilon"][hit].tolist())):
                pick = hit & (attacked["epsilon"] == eps)
                lines.append(roc_line(f"filter, ε = {eps:g}/255", np.r_[negatives, attacked_scores[pick]],
                                      np.r_[np.zeros(len(negatives), bool), np.ones(int(pick.sum()), bool)]))
            msp_attacked = BASELINES["msp"]().score(attacked)[hit]
            lines.append(roc_line("MSP, every ε", np.r_[msp[correct], msp_attacked],
                                  np.r_[np.zeros(int(correct.sum()), bool), np.ones(int(hit.sum()), bool)]))
            figures.append(line_chart([line for line in lines if line], title="ROC: successful attacks vs clean",
                                      xlabel="false-alarm rate (clean correct inputs flagged)",
                                      ylabel="share of attacks flagged", y_range=(0, 1), diagonal=True))
    shares = np.linspace(0, MAX_REJECTED, 51)
    tradeoff = [{"label": label, "x": shares.tolist(), "y": accepted_accuracy(scores, correct, shares).tolist()}
                for label, scores in (("concept filter", filt.score(test)), ("max softmax (MSP)", msp))]
    marks = []
    for i, (key, name) in enumerate((("accepted", "concept filter"), ("msp_accepted", "MSP"))):
        point = metrics.get(key) or {}
        if finite(point.get("share")) is not None and finite(point.get("accuracy")) is not None:
            marks.append({"label": f"{name} as deployed: rejects {100 * (1 - point['share']):.1f}%, accuracy of the "
                                   f"rest {100 * point['accuracy']:.1f}%", "x": 1 - point["share"],
                          "y": point["accuracy"], "colour": ("#2f5fb3", "#d1495b")[i]})
    figures.append(line_chart(tradeoff, title="accuracy of what the filter accepts", xlabel="share of test inputs "
                              "rejected", ylabel="accuracy of the accepted", x_range=(0, MAX_REJECTED), marks=marks))
    return {"figures": figures, "curve_aurocs": aurocs, "test_rows": len(correct)}


def runtime_filter(run: Path) -> dict | None:
    """The runtime filter section's content, None when ``monitor`` did not run."""
    folder = run / "monitor"
    if not folder.is_dir():
        return None
    metrics = read_json(folder / "metrics.json")
    if metrics is None:
        return {"missing": f"{folder} holds no metrics.json (monitor did not finish)"}
    out = {"table": auroc_table(folder / "evaluation.parquet"), "fpr_target": finite(metrics.get("fpr_target")),
           "test_accuracy": finite(metrics.get("test_accuracy")), "accepted": metrics.get("accepted"),
           "msp_accepted": metrics.get("msp_accepted"), "verdicts": metrics.get("verdicts", {}),
           "false_alarm_rate": metrics.get("false_alarm_rate"),
           "adversarial_detection": metrics.get("adversarial_detection"),
           "adaptive": metrics.get("adaptive"), "failure_modes": (metrics.get("failure_modes") or {}).get("clusters")}
    try:
        out |= curves(run, metrics)
    except (OSError, ValueError, KeyError) as err:  # an old or foreign bundle: the table still stands
        log(f"report: no filter curves: {err}")
        out["curves_missing"] = str(err)
    return out
