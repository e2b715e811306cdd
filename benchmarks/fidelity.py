"""Fidelity of the diagnoses against ConceptWorld's truth, over scenario sets and seeds.

For each seed, runs ``world`` (and, unless ``--world-only``, ``embed``, ``analyze`` and ``evaluate``) on
the given config with ``world.seed=SEED`` and ``run.name=<name>-s<SEED>``, then prints one table row per
run: the classifier, each scenario's slice gap (``*``: planted), and per semantic source the cells called
significant, the truly significant ones, precision, recall, the false discovery proportion (1 − precision),
the ghosts (called cells without even unadjusted evidence in the truth) and the share of classes whose top
blamed concept is a true cause. The last line averages over the seeds.

    # a world with no planted scenario, three seeds, the demo's VLM reused (no retraining)
    .venv/bin/python benchmarks/fidelity.py --config conf/demo.yaml --config conf/experiments/null_world.yaml \\
        --seeds 1 2 3 --vlm-from runs/demo
    # which scenario kinds plant (slice gaps only)
    .venv/bin/python benchmarks/fidelity.py --config conf/demo.yaml --config conf/experiments/reliability.yaml \\
        --world-only world.allow_unplanted=true

``--vlm-from RUN`` points ``vlm.pretrained`` at the checkpoint RUN's ``world`` used: the tiny CLIP is trained
on the world's ``vlm`` split, which depends on the seed, so without it every seed trains its own (minutes).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from conceptlens.cli import parse_config
from conceptlens.jobs import analyze, embed, evaluate, world

STEPS = (world, embed, analyze, evaluate)


def run_seed(configs: list[str], overrides: list[str], world_only: bool) -> dict:
    argv = [a for c in configs for a in ("--config", c)] + overrides
    cfg = parse_config("fidelity", __doc__, argv)
    for step in STEPS[:1] if world_only else STEPS:
        code = step.main(argv)
        if code != 0:
            raise SystemExit(f"{step.__name__} exited with {code} for {' '.join(argv)}")
    folder = Path(cfg.run.root) / cfg.run.name
    if world_only:
        return {"world": json.loads((folder / "world" / "metrics.json").read_text())}
    return json.loads((folder / "evaluate" / "scorecard.json").read_text())


def row(seed: int, card: dict) -> dict:
    out = {"seed": seed}
    if "semantic" not in card:  # world only
        c = card["world"]["classifier"]
        out["accuracy"] = c["accuracy"]
        out["gaps"] = {name: s["gap"] for name, s in c["slices"].items()}
        return out
    w = card["world"]
    out["accuracy"] = w["accuracy"]
    out["gaps"] = {name: s["gap"] for name, s in w["scenarios"].items()}
    for source in ("vlm", "aligned"):
        for scope in ("all", "reliable"):
            s = card["semantic"][source][scope]
            out[f"{source}/{scope}"] = {"called": s["called"], "truth": s["truly_significant"],
                                        "precision": s["precision"], "recall": s["recall"],
                                        "fdp": None if s["precision"] is None else 1 - s["precision"],
                                        "ghosts": s["unsupported"],
                                        "top": s["top_cause"]["share"]}
    return out


def fmt(x) -> str:
    return "   -" if x is None else f"{x:.2f}"


def print_table(rows: list[dict]) -> None:
    for r in rows:
        gaps = " ".join(f"{name} {gap:+.2f}{'*' if gap >= 0.2 else ''}" for name, gap in r["gaps"].items())
        print(f"seed {r['seed']}: accuracy {r['accuracy']:.3f}  {gaps or 'no scenarios'}")
        for key in (k for k in r if "/" in k):
            s = r[key]
            print(f"  {key:<17} called {s['called']:>3} truth {s['truth']:>3} precision {fmt(s['precision'])} "
                  f"recall {fmt(s['recall'])} FDP {fmt(s['fdp'])} ghosts {s['ghosts']:>2} top cause {fmt(s['top'])}")
    keys = [k for k in rows[0] if "/" in k]
    if len(rows) > 1 and keys:
        print(f"mean over {len(rows)} seeds:")
        for key in keys:
            mean = {m: np.mean([r[key][m] for r in rows if r[key][m] is not None] or [np.nan])
                    for m in ("called", "truth", "precision", "recall", "fdp", "ghosts", "top")}
            print(f"  {key:<17} called {mean['called']:5.1f} truth {mean['truth']:5.1f} precision "
                  f"{mean['precision']:.2f} recall {mean['recall']:.2f} FDP {mean['fdp']:.2f} ghosts "
                  f"{mean['ghosts']:.1f} top cause {mean['top']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", default=[], metavar="FILE")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--vlm-from", metavar="RUN", help="reuse the tiny CLIP of this run's world (a run folder)")
    parser.add_argument("--world-only", action="store_true", help="only build the worlds: slice gaps")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args()
    name = parse_config("fidelity", __doc__, [a for c in args.config for a in ("--config", c)] + args.overrides).run.name
    extra = list(args.overrides)
    if args.vlm_from:
        extra.append(f"vlm.pretrained={json.loads((Path(args.vlm_from) / 'world' / 'models.json').read_text())['vlm']}")
    rows = []
    for seed in args.seeds:
        card = run_seed(args.config, extra + [f"world.seed={seed}", f"run.name={name}-s{seed}"], args.world_only)
        rows.append(row(seed, card))
        print_table(rows[-1:])
    print("\n=== fidelity ===")
    print_table(rows)


if __name__ == "__main__":
    main()
