"""Fidelity of the diagnoses against ConceptWorld's truth, as a distribution over world seeds (issue 25).

For each seed, runs the whole pipeline (``conceptlens demo``: a new world, its classifier and tiny CLIP retrained,
every analysis, ``evaluate``) on the given configs with ``world.seed=SEED`` and ``run.name=<name>-s<SEED>``, or
with ``--steps semantic`` only world → embed → analyze → evaluate. Then it reports every goal of the scorecard
as a distribution: its value per seed, mean, min–max and the share of seeds that meet it (with its 95 % Wilson
interval), and writes them with the command, date, machine and seeds to ``benchmarks/results/fidelity_<name>.json``
(the README's fidelity tables are these files). Seeds default to three from the config's own ``world.seed``.

    .venv/bin/python benchmarks/fidelity.py --config conf/demo.yaml                     # the demo: seeds 0 1 2
    .venv/bin/python benchmarks/fidelity.py --config conf/demo.yaml --config conf/experiments/held_out_a.yaml
    .venv/bin/python benchmarks/fidelity.py --config conf/demo.yaml --config conf/experiments/null_world.yaml \\
        --steps semantic
    .venv/bin/python benchmarks/fidelity.py --config conf/demo.yaml --summary-only     # re-read finished runs
    .venv/bin/python benchmarks/fidelity.py --config conf/demo.yaml --steps models     # only train and cache

``--vlm-from RUN`` observes every seed with the tiny CLIP of RUN (e.g. the demo's seed 0) instead of training one per
seed: the classifier, the model being diagnosed, is still retrained per seed; the observer stays fixed, as a user's
CLIP does (and it saves two minutes a seed).

A re-run resumes: trained models are cached by content, ``embed`` and ``attack`` resume, the analyses re-run (so a
change to an analysis or to the scoring is measured by re-running, in minutes). Runs go under ``--root``
(default ``runs/fidelity``); the registry's aliases are left alone (nothing is registered).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np
import torch

from conceptlens.cli import parse_config
from conceptlens.jobs import analyze, attack, demo, embed, evaluate, world
from conceptlens.pipeline.stats import wilson

RESULTS = Path(__file__).resolve().parent / "results"
# what a benchmark run leaves out of the demo: the registry (the demo's aliases stay the demo's) and the neuron
# pictures (not scored)
QUIET = ["monitor.model_name=", "neurons.model_name=", "neurons.visualise.neurons=0", "world.allow_unplanted=true"]


STEPS = {"semantic": (world, embed, analyze, evaluate), "models": (world, embed, attack)}


def run_seed(argv: list[str], steps: str) -> dict | None:
    """One seed through the pipeline; its scorecard (None for ``models``: nothing is scored)."""
    cfg = parse_config("fidelity", __doc__, argv)
    if steps == "all":
        demo.main(argv)  # exit 1 when a scenario did not plant: reported below (world.skipped), not fatal
    else:
        for step in STEPS[steps]:
            if step.main(argv) != 0 and step is not world:  # world: 1 when a scenario did not plant
                raise SystemExit(f"{step.__name__} exited non-zero for {' '.join(argv)}")
    if steps == "models":
        return None
    return json.loads((Path(cfg.run.root) / cfg.run.name / "evaluate" / "scorecard.json").read_text())


def numeric(value) -> float | None:
    """A goal's value as a number (ranks and counts too; True/False as 1/0), None when it has none."""
    if isinstance(value, bool):
        return float(value)
    return float(value) if isinstance(value, (int, float)) else None


def summarise(cards: dict[int, dict]) -> dict:
    """Per goal over the seeds: values, mean, min, max, seeds met (k of n) and the Wilson interval of that share;
    plus each seed's test accuracy, planted and skipped scenarios."""
    names = sorted({g for card in cards.values() for g in card["goals"]})
    goals = {}
    for name in names:
        found = {seed: card["goals"][name] for seed, card in cards.items() if name in card["goals"]}
        values = [numeric(g["value"]) for g in found.values()]
        present = [v for v in values if v is not None]
        met = sum(g["met"] for g in found.values())
        low, high = wilson(met, len(found))
        goals[name] = {"target": next(iter(found.values()))["target"], "values": {s: g["value"] for s, g in found.items()},
                       "mean": float(np.mean(present)) if present else None,
                       "min": min(present) if present else None, "max": max(present) if present else None,
                       "met": met, "seeds": len(found), "met_interval": [float(low), float(high)]}
    per_seed = {seed: {"accuracy": card["world"]["accuracy"], "planted": card["world"]["planted"],
                    "skipped": card["world"]["skipped"],
                    "goals_met": sum(g["met"] for g in card["goals"].values()), "goals": len(card["goals"])}
             for seed, card in cards.items()}
    return {"goals": goals, "per_seed": per_seed}


def fmt(x) -> str:
    """A value as the tables show it: two decimals, ranks and counts as they are, None as –."""
    if x is None:
        return "–"
    if isinstance(x, float) and not x.is_integer():
        return f"{x:.2f}"
    return str(int(x)) if isinstance(x, float) else str(x)


def table(summary: dict) -> list[str]:
    """The markdown table the README shows: one row per goal."""
    lines = ["| goal | target | per seed | mean | min–max | seeds met [95 %] |", "|---|---|---|---|---|---|"]
    for name, g in summary["goals"].items():
        per_seed = ", ".join(fmt(v) for v in g["values"].values())
        spread = "–" if g["min"] is None else f"{fmt(g['min'])}–{fmt(g['max'])}"
        low, high = g["met_interval"]
        lines.append(f"| {name} | {fmt(g['target'])} | {per_seed} | {fmt(g['mean'])} | {spread}"
                     f" | {g['met']}/{g['seeds']} [{low:.2f}, {high:.2f}] |")
    per_seed = "; ".join(f"seed {s}: accuracy {v['accuracy']:.3f}, {v['goals_met']} of {v['goals']} goals met"
                         + (f", not planted: {', '.join(v['skipped'])}" if v["skipped"] else "")
                         for s, v in summary["per_seed"].items())
    return lines + ["", per_seed]


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").is_file() else \
        platform.processor()
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def set_of(args: argparse.Namespace, command: str) -> tuple[list[str], str, list[int]]:
    """From a parsed command line (``--config`` files, ``--seeds``, overrides): the config arguments, the set's name
    (its ``run.name``, the demo's by default) and its seeds (default: the config's ``world.seed`` and the next two)."""
    configs = [a for c in args.config for a in ("--config", c)]
    cfg = parse_config(command, __doc__, configs + args.overrides)
    return configs, cfg.run.name if cfg.run.name != "default" else "demo", args.seeds or [cfg.world.seed + i
                                                                                          for i in range(3)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", default=[], metavar="FILE")
    parser.add_argument("--seeds", type=int, nargs="+", help="world seeds (default: the config's and the next two)")
    parser.add_argument("--steps", choices=("all", "semantic", "models"), default="all",
                        help="all: the demo pipeline; semantic: world, embed, analyze, evaluate; models: world, embed, "
                             "attack only (trains and caches the expensive parts, scores nothing)")
    parser.add_argument("--root", default="runs/fidelity", help="where the runs go (run.root)")
    parser.add_argument("--summary-only", action="store_true", help="only re-read the finished runs' scorecards")
    parser.add_argument("--vlm-from", metavar="RUN", help="observe with this run's tiny CLIP (a run folder) instead of "
                        "training one per seed: a fixed observer, as a user's CLIP is; the VLM split is not drawn")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args()
    configs, name, seeds = set_of(args, "fidelity")
    observer = []
    if args.vlm_from:
        vlm = json.loads((Path(args.vlm_from) / "world" / "models.json").read_text())["vlm"]
        observer = [f"vlm.pretrained={vlm}", "world.splits.vlm=0"]
    cards = {}
    for seed in seeds:
        argv = configs + [f"run.root={args.root}"] + QUIET + observer + args.overrides + [f"world.seed={seed}",
                                                                              f"run.name={name}-s{seed}"]
        if args.summary_only:
            cards[seed] = json.loads((Path(args.root) / f"{name}-s{seed}" / "evaluate" / "scorecard.json").read_text())
        else:
            cards[seed] = run_seed(argv, args.steps)
        if cards[seed] is None:
            print(f"seed {seed}: models trained and cached", flush=True)
            continue
        print(f"seed {seed}: {sum(g['met'] for g in cards[seed]['goals'].values())} of "
              f"{len(cards[seed]['goals'])} goals met", flush=True)
    if args.steps == "models":
        return
    summary = summarise(cards)
    result = {"set": name, "configs": args.config, "overrides": args.overrides, "steps": args.steps, "seeds": seeds,
              "observer": observer or "a tiny CLIP trained per seed",
              "command": " ".join([Path(sys.executable).name, *sys.argv]),
              "date": datetime.date.today().isoformat(), "machine": machine()} | summary
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"fidelity_{name}.json"
    if args.summary_only and path.is_file():  # re-read: the runs are those this command makes, on the recorded machine
        result |= {k: json.loads(path.read_text())[k] for k in ("date", "machine")}
        result["command"] = " ".join(a for a in result["command"].split() if a != "--summary-only")
    path.write_text(json.dumps(result, indent=1, default=str))
    print(f"\n=== fidelity: {name}, seeds {seeds} ===")
    print("\n".join(table(summary)))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
