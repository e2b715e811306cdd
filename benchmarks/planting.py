"""How reliably each scenario kind plants the failure it says (issue 28): the planting rate per kind.

Per world seed, one world with one scenario of every kind (``spurious_correlation``, ``blind_spot``,
``rare_subgroup``, ``head_fault``), each on its own class drawn by the seed and on an attribute value drawn by the
seed (for a blind spot or a rare subgroup, a value other than its group's most common one; a head fault's target
another class), the kind's defaults for the rest (what a user who writes a scenario gets). The world's classifier
(the configs': resnet18 from scratch by default, ``conf/experiments/efficientnet.yaml`` a fine-tuned pretrained
backbone) is trained on it and each slice's gap measured on ``test``; a scenario plants when its gap reaches the
gap check's 0.20. No VLM and no analysis: only ``world``'s own models and check.

Writes ``benchmarks/results/planting_<name>.json`` (per kind: trials, planted, rate and its 95 % Wilson interval,
each trial's class, attribute and gap; the command, date, machine and seeds) and prints the table.

    .venv/bin/python benchmarks/planting.py --config conf/demo.yaml --seeds 0 1 2 3 4 5 6 7
    .venv/bin/python benchmarks/planting.py --config conf/demo.yaml --config conf/experiments/efficientnet.yaml \\
        --name efficientnet --seeds 0 1 2 3 4 5 6 7
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from fidelity import RESULTS, machine

from conceptlens.config import ScenarioConfig, load_config
from conceptlens.evaluation.world_models import MIN_SLICE_GAP, is_planted, slice_accuracies
from conceptlens.models import build_classifier, resolve_device
from conceptlens.pipeline.stats import wilson
from conceptlens.recipes.conceptworld import ensure_classifier, ensure_world
from conceptlens.recipes.data import load_images
from conceptlens.recipes.train_classifier import predict
from conceptlens.world import ATTRIBUTE_GROUPS, CLASSES, split_arrays
from conceptlens.world.scenarios import KINDS


def draw_scenarios(seed: int) -> list[ScenarioConfig]:
    """One scenario of every kind, on distinct classes and attribute groups, drawn by ``seed``."""
    rng = np.random.default_rng(seed)
    classes = rng.permutation(CLASSES)
    groups = rng.permutation(len(ATTRIBUTE_GROUPS))
    out = []
    for i, kind in enumerate(KINDS):
        group = ATTRIBUTE_GROUPS[groups[i % len(groups)]]
        values = list(group.values)
        if kind in ("blind_spot", "rare_subgroup"):  # a condition the class meets rarely enough to miss in training
            values.remove(group.values[int(np.argmax(group.weights))])
        value = values[rng.integers(len(values))]
        target = str(classes[len(KINDS)]) if kind == "head_fault" else None
        out.append(ScenarioConfig(name=f"{kind}_{classes[i]}", kind=kind, classes=[str(classes[i])],
                                  attribute=f"{group.name}={value}", target=target))
    return out


def trial(configs: list[str], overrides: list[str], seed: int, log) -> list[dict]:
    """The world of ``seed`` with :func:`draw_scenarios`, its classifier, and each scenario's gap on test."""
    cfg = load_config(configs, overrides + [f"world.seed={seed}"])
    cfg = replace(cfg, world=replace(cfg.world, scenarios=draw_scenarios(seed), splits={
        k: v for k, v in cfg.world.splits.items() if k in ("train", "test")}))
    device = resolve_device(cfg.run.device)
    world = ensure_world(cfg, log)
    checkpoint = ensure_classifier(cfg, world, device, log)
    clf = build_classifier(cfg.classifier.arch, num_classes=cfg.classifier.num_classes, head=cfg.classifier.head,
                           checkpoint=checkpoint, preprocess=cfg.classifier.preprocess)
    test = split_arrays(world, "test")
    prediction, _ = predict(clf, load_images(test["paths"]), device=device)
    names = [s.name for s in cfg.world.scenarios]
    slices = slice_accuracies(prediction == test["labels"], test["scenarios"], names)["slices"]
    return [{"seed": seed, "kind": s.kind, "class": s.classes[0], "attribute": s.attribute,
             "n": slices[s.name]["n"], "gap": slices[s.name]["gap"], "planted": is_planted(slices[s.name]["gap"])}
            for s in cfg.world.scenarios]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", default=[], metavar="FILE")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(8)))
    parser.add_argument("--name", default="resnet18", help="the results file's name: planting_<name>.json")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args()
    trials = []
    for seed in args.seeds:
        found = trial(args.config, args.overrides, seed, log=lambda line: print(line, flush=True))
        trials += found
        print(f"seed {seed}: " + ", ".join(f"{t['kind']} {t['class']} {t['attribute']} gap {t['gap']:.2f}"
                                           for t in found), flush=True)
    per_kind = {}
    for kind in KINDS:
        mine = [t for t in trials if t["kind"] == kind]
        planted = sum(t["planted"] for t in mine)
        per_kind[kind] = {"trials": len(mine), "planted": planted, "rate": planted / len(mine),
                          "interval": list(wilson(planted, len(mine))), "runs": mine}
    result = {"name": args.name, "configs": args.config, "overrides": args.overrides, "seeds": args.seeds,
              "min_gap": MIN_SLICE_GAP, "kinds": per_kind, "command": " ".join([Path(sys.executable).name, *sys.argv]),
              "date": datetime.date.today().isoformat(), "machine": machine()}
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"planting_{args.name}.json"
    path.write_text(json.dumps(result, indent=1, default=str))
    print(f"\n| kind | planted | rate (95 % interval) | gaps |\n|---|---|---|---|")
    for kind, k in per_kind.items():
        gaps = ", ".join(f"{t['gap']:.2f}" for t in k["runs"])
        print(f"| {kind} | {k['planted']} of {k['trials']} | {k['rate']:.2f} ({k['interval'][0]:.2f}–"
              f"{k['interval'][1]:.2f}) | {gaps} |")
    print(f"written: {path}")


if __name__ == "__main__":
    main()
