"""conceptlens monitor: calibrate the runtime filter, compare it with standard detectors, register the bundle.

Reads this run's clean embeddings (``embed``), adversarial embeddings (``attack``) and concept
analysis (``analyze``: aligner, concept embeddings, z-score statistics). Fits the filter and
the baselines (max softmax, energy, Mahalanobis, k-NN on encoder features) on ``calib``,
chooses thresholds for ``monitor.fpr`` false alarms, and evaluates everything on ``test``:
misclassification detection and adversarial detection per attack and ε (AUROC, AUPR, TPR at
the target FPR), and the accuracy of the inputs the filter accepts. Writes under
``<run>/monitor/``: ``bundle/`` (the filter), ``evaluation.parquet``, ``metrics.json``; the
bundle is registered in MLflow as ``monitor.model_name`` with alias ``monitor.alias``.
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

from conceptlens.semantic.aligner import Aligner
from conceptlens.cli import run_command
from conceptlens.config import Config
from conceptlens.runtime.detectors import BASELINES, KNN, detection_metrics, threshold_at_fpr
from conceptlens.pipeline.runs import command_dir, log, model_spec, write_metrics
from conceptlens.runtime.filter import SIGNALS, ConceptFilter
from conceptlens.pipeline.shards import vectors
from conceptlens.pipeline.registry import register_folder
from conceptlens.runtime.registered import FilterPyfunc
from conceptlens.pipeline.tracking import log_results, mlflow_run

COLUMNS = ["split", "label_index", "prediction", "logits", "features", "vlm_embedding"]


def read_rows(folder: Path, splits: Sequence[str], extra: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """The given splits of an embeddings table as a NumPy batch (vectors as 2-D arrays)."""
    if not any(folder.glob("*.parquet")):
        raise FileNotFoundError(f"no embeddings at {folder}")
    table = pq.read_table(folder, columns=COLUMNS + list(extra))
    table = table.filter(pc.is_in(table["split"], pa.array(list(splits))))
    return {name: vectors(table[name]) if pa.types.is_fixed_size_list(table.schema.field(name).type)
            else table[name].to_numpy() for name in table.column_names}


def load_filter(analysis: Path) -> ConceptFilter:
    if not (analysis / "concepts.npz").is_file():
        raise FileNotFoundError(f"no concept analysis in {analysis}; run `conceptlens analyze` first")
    text = np.load(analysis / "concepts.npz")
    info = json.loads((analysis / "concepts.json").read_text())
    sources = ("aligned", "vlm")
    return ConceptFilter(Aligner.load(analysis / "aligner.npz"), text["concepts"], text["classes"],
                         {s: text[f"{s}_mean"] for s in sources}, {s: text[f"{s}_std"] for s in sources},
                         list(info["concepts"]), info["classes"])


def evaluate(scores: dict[str, dict[str, np.ndarray]], clean: dict, adversarial: dict, fpr: float) -> list[dict]:
    """One row per (detector, task): misclassification on clean test rows; adversarial per attack and ε
    (successful attacks against all clean test rows)."""
    rows = []
    wrong = clean["prediction"] != clean["label_index"]
    fooled = adversarial["prediction"] != adversarial["label_index"]
    for name, s in scores.items():
        rows.append({"detector": name, "task": "misclassified"} | detection_metrics(s["clean_mis"], wrong, fpr))
        for attack, eps in sorted(set(zip(adversarial["attack"], adversarial["epsilon"]))):
            m = (adversarial["attack"] == attack) & (adversarial["epsilon"] == eps) & fooled
            both = np.r_[s["clean_adv"], s["adversarial"][m]]
            truth = np.r_[np.zeros(len(s["clean_adv"]), bool), np.ones(int(m.sum()), bool)]
            rows.append({"detector": name, "task": f"{attack}_eps{eps:g}"} | detection_metrics(both, truth, fpr))
    return rows


def monitor(cfg: Config) -> dict:
    out = command_dir(cfg.run, "monitor")
    run_dir = Path(cfg.run.root) / cfg.run.name
    extra = ["attack", "epsilon"]
    clean = {split: read_rows(run_dir / "embed" / "embeddings", [split]) for split in ("calib", "test")}
    adversarial = {split: read_rows(run_dir / "attack" / "embeddings", [split], extra) for split in ("calib", "test")}
    log(f"monitor: calib {len(clean['calib']['prediction'])} clean + {len(adversarial['calib']['prediction'])} "
        f"adversarial rows; test {len(clean['test']['prediction'])} + {len(adversarial['test']['prediction'])}")
    filt = load_filter(run_dir / "analyze").fit(clean["calib"], adversarial["calib"], fpr=cfg.monitor.fpr,
                                                    ridge=cfg.analyze.ridge)

    scores = {}
    test_all = {"clean": clean["test"], "adversarial": adversarial["test"]}
    filter_scores = {k: filt.score_all(v) for k, v in test_all.items()}
    scores["concept filter"] = {"clean_mis": filter_scores["clean"]["misclassified"],
                                "clean_adv": filter_scores["clean"]["adversarial"],
                                "adversarial": filter_scores["adversarial"]["adversarial"]}
    signals = {k: dict(zip(SIGNALS, filt.signals(v).T)) for k, v in test_all.items()}
    heatmap_only = {k: {"mis": s["cos_incorrect"] - s["cos_correct"], "adv": s["cos_adversarial"] - s["cos_correct"]}
                    for k, s in signals.items()}
    scores["concept heatmap only"] = {"clean_mis": heatmap_only["clean"]["mis"], "clean_adv": heatmap_only["clean"]["adv"],
                                      "adversarial": heatmap_only["adversarial"]["adv"]}
    calib_wrong = clean["calib"]["prediction"] != clean["calib"]["label_index"]
    for name, cls in BASELINES.items():
        detector = (KNN(cfg.monitor.knn_k) if cls is KNN else cls()).fit(clean["calib"], calib_wrong)
        s = {k: detector.score(v) for k, v in test_all.items()}
        scores[name] = {"clean_mis": s["clean"], "clean_adv": s["clean"], "adversarial": s["adversarial"]}
    table = evaluate(scores, clean["test"], adversarial["test"], cfg.monitor.fpr)
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
        "verdicts": {v: int((verdicts == v).sum()) for v in ("accept", "likely-misclassified", "likely-adversarial")},
        "detection": {f"{r['detector'].replace(' ', '_')}.{r['task']}": {k: r[k] for k in ("auroc", "aupr", "tpr_at_fpr")}
                      for r in table},
    }
    spec = model_spec(cfg)
    bundle = filt.save(out / "bundle", metadata={
        "run": cfg.run.name, "image_size": cfg.data.image_size,
        "classifier": {"arch": spec.classifier_arch, "checkpoint": _absolute(spec.classifier_checkpoint),
                       "weights": spec.classifier_weights, "head": spec.classifier_head,
                       "num_classes": spec.num_classes},
        "vlm": {"arch": spec.vlm_arch, "pretrained": _absolute(spec.vlm_pretrained),
                "model_config": _absolute(spec.vlm_model_config)}})
    metrics["bundle"] = str(bundle.resolve())
    write_metrics(out, metrics)
    return metrics | {"table": table}


def _absolute(path: str | None) -> str | None:
    """Files as absolute paths (the server may start elsewhere); tags such as ``openai`` unchanged."""
    return str(Path(path).resolve()) if path and Path(path).is_file() else path


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
    return "\n".join(lines)


def run(cfg: Config) -> dict:
    with mlflow_run(cfg, "monitor"):
        metrics = monitor(cfg)
        out = command_dir(cfg.run, "monitor")
        log_results({k: v for k, v in metrics.items() if k != "table"}, out / "metrics.json",
                    out / "evaluation.parquet", out / "bundle")
        if cfg.monitor.model_name:
            metrics["registered"] = register_folder(out / "bundle", FilterPyfunc(), cfg.monitor.model_name,
                                                   cfg.monitor.alias)
            log(f"monitor: registered {metrics['registered']}")
    return metrics


def main(argv: Sequence[str] | None = None) -> int:
    return run_command("monitor", __doc__, argv, run, report)


if __name__ == "__main__":
    sys.exit(main())
