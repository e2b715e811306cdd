"""conceptlens monitor: calibrate the runtime filter, compare it with standard detectors, register the bundle.

Reads this run's clean embeddings (``embed``), adversarial embeddings (``attack``; without them the
filter detects misclassification only and adversarial detection is off) and concept analysis
(``analyze``: aligner, concept embeddings, z-score statistics). Fits the filter and the baselines
(max softmax, energy, Mahalanobis, k-NN on encoder features) on ``calib``, chooses thresholds
for ``monitor.fpr`` false alarms, and evaluates everything on ``test``: misclassification
detection and adversarial detection per attack and ε (AUROC, AUPR, TPR at the target FPR), and
the accuracy of the inputs the filter accepts. Writes under
``<run>/monitor/``: ``bundle/`` (the filter with copies of the models it judges),
``evaluation.parquet``, ``metrics.json``; the bundle is registered in MLflow as
``monitor.model_name`` with alias ``monitor.alias``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from conceptlens.semantic.aligner import Aligner
from conceptlens.cli import run_command
from conceptlens.config import Config
from conceptlens.runtime.detectors import BASELINES, KNN, detection_metrics, threshold_at_fpr
from conceptlens.pipeline.runs import command_dir, log, model_spec, run_inputs, write_metrics
from conceptlens.runtime.filter import SIGNALS, ConceptFilter
from conceptlens.pipeline.shards import read_rows
from conceptlens.pipeline.registry import register_folder
from conceptlens.runtime.bundle import save_bundle
from conceptlens.runtime.registered import FilterPyfunc
from conceptlens.pipeline.tracking import log_results, mlflow_run, run_tags

def load_filter(analysis: Path) -> ConceptFilter:
    """A filter on the run's concept analysis; the concepts its trust check did not back (all of them when the VLM
    did not recognise the classes) are never named in the filter's explanations."""
    if not (analysis / "concepts.npz").is_file():
        raise FileNotFoundError(f"no concept analysis in {analysis}; run `conceptlens analyze` first")
    text = np.load(analysis / "concepts.npz")
    info = json.loads((analysis / "concepts.json").read_text())
    concepts = list(info["concepts"])
    trust = json.loads((analysis / "summary.json").read_text()).get("trust", {})
    unreliable = list(trust.get("unreliable_concepts", [])) if trust.get("sees_classes", True) else concepts
    if unreliable:
        log(f"monitor: the analysis' trust check did not back {len(unreliable)} of {len(concepts)} concepts; the "
            f"filter's explanations leave them out ({', '.join(unreliable[:5])}{' …' if len(unreliable) > 5 else ''})")
    sources = ("aligned", "vlm")
    return ConceptFilter(Aligner.load(analysis / "aligner.npz"), text["concepts"], text["classes"],
                         {s: text[f"{s}_mean"] for s in sources}, {s: text[f"{s}_std"] for s in sources},
                         concepts, info["classes"], unreliable=unreliable)


def evaluate(scores: dict[str, dict[str, np.ndarray]], clean: dict, adversarial: dict | None, fpr: float) -> list[dict]:
    """One row per (detector, task): misclassification on clean test rows; adversarial per attack and ε
    (successful attacks against all clean test rows), only when there are adversarial rows."""
    rows = []
    wrong = clean["prediction"] != clean["label_index"]
    for name, s in scores.items():
        rows.append({"detector": name, "task": "misclassified"} | detection_metrics(s["clean_mis"], wrong, fpr))
        if adversarial is None:
            continue
        fooled = adversarial["prediction"] != adversarial["label_index"]
        for attack, eps in sorted(set(zip(adversarial["attack"], adversarial["epsilon"]))):
            m = (adversarial["attack"] == attack) & (adversarial["epsilon"] == eps) & fooled
            both = np.r_[s["clean_adv"], s["adversarial"][m]]
            truth = np.r_[np.zeros(len(s["clean_adv"]), bool), np.ones(int(m.sum()), bool)]
            rows.append({"detector": name, "task": f"{attack}_eps{eps:g}"} | detection_metrics(both, truth, fpr))
    return rows


def read_adversarial(folder: Path) -> tuple[dict[str, dict] | None, str | None]:
    """The calib and test rows of ``attack``'s embeddings, or ``None`` and why adversarial detection is off
    (no attack outputs, or no adversarial calib rows to fit on)."""
    if not any(folder.glob("*.parquet")):
        return None, f"no `attack` outputs in {folder} (run `conceptlens attack`, then monitor again, to add it)"
    rows = {split: read_rows(folder, [split], ["attack", "epsilon"]) for split in ("calib", "test")}
    if not len(rows["calib"]["prediction"]):
        return None, f"no adversarial rows of split calib in {folder} (attack.splits)"
    return rows, None


def monitor(cfg: Config) -> dict:
    out = command_dir(cfg.run, "monitor")
    run_dir = Path(cfg.run.root) / cfg.run.name
    clean = {split: read_rows(run_dir / "embed" / "embeddings", [split]) for split in ("calib", "test")}
    empty = [split for split, rows in clean.items() if not len(rows["prediction"])]
    if empty:
        raise ValueError(f"no rows of split(s) {empty} in {run_dir / 'embed' / 'embeddings'}: monitor calibrates on "
                         f"calib and evaluates on test (data without splits: keep data.calib_share inside (0, 1))")
    adversarial, off = read_adversarial(run_dir / "attack" / "embeddings")
    log(f"monitor: calib {len(clean['calib']['prediction'])} clean + "
        f"{len(adversarial['calib']['prediction']) if adversarial else 0} adversarial rows; "
        f"test {len(clean['test']['prediction'])} + {len(adversarial['test']['prediction']) if adversarial else 0}")
    if off:
        log(f"monitor: adversarial detection is off: {off}")
    filt = load_filter(run_dir / "analyze").fit(clean["calib"], adversarial["calib"] if adversarial else None,
                                                fpr=cfg.monitor.fpr, ridge=cfg.analyze.ridge)

    # per detector: "clean_mis" (clean test rows, misclassification score); with attacks also "clean_adv" and
    # "adversarial" (clean and adversarial test rows, adversarial score)
    scores = {}
    test_all = {"clean": clean["test"]} | ({"adversarial": adversarial["test"]} if adversarial else {})
    filter_scores = {k: filt.score_all(v) for k, v in test_all.items()}
    scores["concept filter"] = {"clean_mis": filter_scores["clean"]["misclassified"]}
    signals = {k: dict(zip(SIGNALS, filt.signals(v).T)) for k, v in test_all.items()}
    scores["concept heatmap only"] = {"clean_mis": signals["clean"]["cos_incorrect"] - signals["clean"]["cos_correct"]}
    if adversarial:
        scores["concept filter"] |= {"clean_adv": filter_scores["clean"]["adversarial"],
                                     "adversarial": filter_scores["adversarial"]["adversarial"]}
        scores["concept heatmap only"] |= {k2: signals[k]["cos_adversarial"] - signals[k]["cos_correct"]
                                           for k, k2 in (("clean", "clean_adv"), ("adversarial", "adversarial"))}
    calib_wrong = clean["calib"]["prediction"] != clean["calib"]["label_index"]
    for name, cls in BASELINES.items():
        detector = (KNN(cfg.monitor.knn_k) if cls is KNN else cls()).fit(clean["calib"], calib_wrong)
        s = {k: detector.score(v) for k, v in test_all.items()}
        scores[name] = {"clean_mis": s["clean"]} | (
            {"clean_adv": s["clean"], "adversarial": s["adversarial"]} if adversarial else {})
    table = evaluate(scores, clean["test"], adversarial["test"] if adversarial else None, cfg.monitor.fpr)
    pq.write_table(pa.Table.from_pylist(table), out / "evaluation.parquet")

    verdicts = filt.verdicts(clean["test"])["verdict"]
    correct = clean["test"]["prediction"] == clean["test"]["label_index"]
    accepted = verdicts == "accept"
    msp = -BASELINES["msp"]().score(clean["test"])  # MSP at the same false-alarm rate, for comparison
    msp_calib = -BASELINES["msp"]().score(clean["calib"])
    msp_accepts = -msp < threshold_at_fpr(-msp_calib[~calib_wrong], cfg.monitor.fpr)
    metrics = {
        "fpr_target": cfg.monitor.fpr, "thresholds": filt.thresholds,
        "test_accuracy": float(correct.mean()),
        "accepted": {"share": float(accepted.mean()), "accuracy": float(correct[accepted].mean()),
                     "false_alarm_rate": float((~accepted[correct]).mean())},
        "msp_accepted": {"share": float(msp_accepts.mean()), "accuracy": float(correct[msp_accepts].mean())},
        "heads": list(filt.heads),
        "verdicts": {v: int((verdicts == v).sum()) for v in filt.verdict_names},
        "detection": {f"{r['detector'].replace(' ', '_')}.{r['task']}": {k: r[k] for k in ("auroc", "aupr", "tpr_at_fpr")}
                      for r in table},
    }
    bundle = save_bundle(filt, out / "bundle", model_spec(cfg), image_size=cfg.data.image_size, run=cfg.run.name)
    metrics["bundle"] = str(bundle.resolve())
    if off:
        metrics["adversarial_detection"] = f"off: {off}"
    write_metrics(out, metrics)
    return metrics | {"table": table}


def report(metrics: dict) -> str:
    table = metrics["table"]
    tasks = list(dict.fromkeys(r["task"] for r in table))
    detectors = list(dict.fromkeys(r["detector"] for r in table))
    cell = {(r["detector"], r["task"]): r for r in table}
    short = {t: t.replace("misclassified", "miscls").replace("_eps", "@") for t in tasks}
    lines = [f"AUROC on test (TPR at {metrics['fpr_target']:.0%} FPR for misclassification in brackets)",
             f"{'detector':<22}" + "".join(f"{short[t]:>{14 if t == 'misclassified' else 9}}" for t in tasks)]
    for d in detectors:
        mis = cell[(d, "misclassified")]
        row = f"{d:<22}{mis['auroc']:>7.3f} ({mis['tpr_at_fpr']:.2f})"
        row += "".join(f"{cell[(d, t)]['auroc']:>9.3f}" for t in tasks[1:])
        lines.append(row)
    a, m = metrics["accepted"], metrics["msp_accepted"]
    lines.append(f"test accuracy {metrics['test_accuracy']:.3f}; the filter accepts {a['share']:.1%} with accuracy "
                 f"{a['accuracy']:.3f} ({a['false_alarm_rate']:.1%} false alarms); MSP at the same FPR accepts "
                 f"{m['share']:.1%} with accuracy {m['accuracy']:.3f}")
    if "adversarial_detection" in metrics:
        lines.append(f"adversarial detection {metrics['adversarial_detection']}")
    return "\n".join(lines)


def run(cfg: Config) -> dict:
    cfg = run_inputs(cfg)  # the models and image size the embeddings were made with, for the bundle
    with mlflow_run(cfg, "monitor"):
        metrics = monitor(cfg)
        out = command_dir(cfg.run, "monitor")
        register = bool(cfg.monitor.model_name)  # a registered bundle is stored once, as the model's files
        log_results({k: v for k, v in metrics.items() if k != "table"}, out / "metrics.json",
                    out / "evaluation.parquet", *([] if register else [out / "bundle"]))
        if register:
            metrics["registered"] = register_folder(out / "bundle", FilterPyfunc(), cfg.monitor.model_name,
                                                   cfg.monitor.alias, tags=run_tags(cfg))
            log(f"monitor: registered {metrics['registered']}")
    return metrics


def main(argv: Sequence[str] | None = None) -> int:
    return run_command("monitor", __doc__, argv, run, report)


if __name__ == "__main__":
    sys.exit(main())
