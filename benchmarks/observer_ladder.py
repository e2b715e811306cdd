"""The ladder of observers (issue 27): every scorecard goal on every rung, over seeds, and what concept probes buy.

A rung is a VLM recipe (``vlm.recipe``): ``supervised`` (the upper bound, told every attribute; the demo's
concept set), ``captions`` (web captions, a group never said; the concepts a user writes, paraphrases and
distractors: ``conf/observers/captions.yaml``) and ``shifted`` (captions, trained on a restyled world). Each rung
runs the fidelity benchmark's pipeline per seed (``benchmarks/fidelity.py``: the world, its classifier, that
rung's tiny CLIP, every analysis, ``evaluate``) under ``run.name=<set>_<rung>-s<SEED>`` (the supervised rung is
the fidelity benchmark's own ``<set>-s<SEED>``). Then, on the realistic rung's runs, ``analyze`` and ``evaluate``
again with ``--probes N`` labelled images per concept drawn from the world's ``vlm`` split
(:func:`conceptlens.world.probes.write_probes`), in runs that link the rung's world and embeddings.

Writes ``benchmarks/results/observer_ladder_<set>.json`` (per rung and per probe count: each goal per seed, mean,
min–max, seeds met; each seed's observer quality) and ``observer_ladder_<set>.png`` (fidelity against observer
quality), with the command, date, machine and seeds.

    .venv/bin/python benchmarks/observer_ladder.py monitor.adaptive.rows=0 --config conf/demo.yaml
    .venv/bin/python benchmarks/observer_ladder.py --config conf/demo.yaml --rungs captions --probes 5 20 --summary-only

(``key=value`` overrides go before ``--rungs``, ``--seeds`` and ``--probes``, which take every value after them.)
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np

from fidelity import QUIET, RESULTS, fmt, machine, run_seed, set_of, summarise

from conceptlens.jobs import analyze, evaluate
from conceptlens.world.probes import write_probes

OBSERVERS = Path(__file__).resolve().parents[1] / "conf" / "observers"
REALISTIC = "captions"  # the rung the goals are held to, and the one probes are measured on
# the goals the ladder table shows, in order (a prefix stands for every goal it begins: the share of them met)
SHOWN = ["blamed_precision", "blamed_recall", "top_blamed_is_a_true_cause", "planted_first.", "sentence_first.",
         "no_distractor_shown", "rootcause_purity.", "neuron_named.", "filter_misclassified", "observer_flags_blind",
         "observer_seen_not_flagged", "observer_hides_unseen"]


def rung_configs(configs: list[str], rung: str) -> list[str]:
    return configs + ([] if rung == "supervised" else ["--config", str(OBSERVERS / f"{rung}.yaml")])


def observer_quality(card: dict) -> dict:
    o = card.get("observer") or {}
    return {k: o.get(k) for k in ("recipe", "zero_shot", "mean_auroc", "mean_agreement")}


def with_probes(root: Path, base: str, per_concept: int, argv: list[str], seed: int) -> dict:
    """``analyze`` and ``evaluate`` of run ``base`` again with ``per_concept`` probes per concept, in a run
    ``<base>-p<N>`` that links ``base``'s world and embeddings; its scorecard."""
    name = f"{base}-p{per_concept}"
    run = root / name
    run.mkdir(parents=True, exist_ok=True)
    for part in ("world", "embed"):
        if not (run / part).exists():
            (run / part).symlink_to((root / base / part).resolve())
    world = json.loads((root / base / "world" / "models.json").read_text())["world"]
    probes = run / "probes"
    write_probes(world, probes, per_concept, seed=seed)
    args = argv + [f"run.name={name}", f"analyze.probes={probes}"]
    for step in (analyze, evaluate):
        if step.main(args) != 0:
            raise SystemExit(f"{step.__name__} exited non-zero for {' '.join(args)}")
    return json.loads((run / "evaluate" / "scorecard.json").read_text())


def shown(summary: dict) -> dict:
    """The ladder's goals from a fidelity summary: a goal's mean and min–max, or for a prefix the share of its goals
    met over every seed."""
    out = {}
    for key in SHOWN:
        if key.endswith("."):
            found = [g for name, g in summary["goals"].items() if name.startswith(key)]
            if found:
                out[key + "*"] = {"met": sum(g["met"] for g in found), "of": sum(g["seeds"] for g in found)}
        elif key in summary["goals"]:
            g = summary["goals"][key]
            out[key] = {"mean": g["mean"], "min": g["min"], "max": g["max"], "met": g["met"], "of": g["seeds"]}
    return out


def table(rows: dict[str, dict]) -> list[str]:
    """Markdown: one row per goal, one column per rung (or probe count)."""
    columns = list(rows)
    goals = list(dict.fromkeys(k for r in rows.values() for k in r["shown"]))
    lines = ["| goal | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for goal in goals:
        cells = []
        for c in columns:
            g = rows[c]["shown"].get(goal)
            if g is None:
                cells.append("–")
            elif "mean" in g:
                cells.append(f"{fmt(g['mean'])} ({fmt(g['min'])}–{fmt(g['max'])}), met {g['met']}/{g['of']}")
            else:
                cells.append(f"met {g['met']} of {g['of']}")
        lines.append(f"| {goal} | " + " | ".join(cells) + " |")
    quality = [f"{fmt(np.mean([q['mean_auroc'] for q in rows[c]['quality'].values() if q['mean_auroc'] is not None]))}"
               for c in columns]
    lines.append("| observer: mean retrieval AUROC | " + " | ".join(quality) + " |")
    return lines


def figure(result: dict, path: Path) -> None:
    """Fidelity against observer quality: each seed of each rung at its observer's mean retrieval AUROC."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for goal, marker in (("blamed_precision", "o"), ("blamed_recall", "s"), ("top_blamed_is_a_true_cause", "^")):
        for label, entry in list(result["rungs"].items()) + [(f"{REALISTIC} + {n} probes", e)
                                                              for n, e in result["probes"].items()]:
            xs = [entry["quality"][s]["mean_auroc"] for s in entry["quality"]]
            ys = [entry["goals"].get(goal, {}).get("values", {}).get(s) for s in entry["quality"]]
            pts = [(x, y) for x, y in zip(xs, ys) if x is not None and y is not None]
            if pts:
                ax.scatter(*zip(*pts), marker=marker, label=f"{goal}: {label}", alpha=0.8)
    ax.set_xlabel("observer quality: mean retrieval AUROC of the world's concepts")
    ax.set_ylabel("goal value")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"fidelity against observer quality ({result['set']})")
    ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", default=[], metavar="FILE")
    parser.add_argument("--rungs", nargs="+", default=["supervised", "captions", "shifted"])
    parser.add_argument("--seeds", type=int, nargs="+", help="world seeds (default: the config's and the next two)")
    parser.add_argument("--probes", type=int, nargs="*", default=[5, 20], help="probes per concept to measure")
    parser.add_argument("--root", default="runs/fidelity")
    parser.add_argument("--summary-only", action="store_true", help="only re-read the finished runs' scorecards")
    parser.add_argument("--reuse", action="store_true", help="re-read the runs that have a scorecard, run the others")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args()
    configs, base, seeds = set_of(args, "observer_ladder")
    result = {"set": base, "configs": args.config, "overrides": args.overrides, "seeds": seeds, "rungs": {},
              "probes": {}, "command": " ".join([Path(sys.executable).name, *sys.argv]),
              "date": datetime.date.today().isoformat(), "machine": machine()}
    root = Path(args.root)
    for rung in args.rungs:
        name = base if rung == "supervised" else f"{base}_{rung}"
        cards = {}
        for seed in seeds:
            argv = rung_configs(configs, rung) + [f"run.root={root}"] + QUIET + args.overrides + [
                f"world.seed={seed}", f"run.name={name}-s{seed}"]
            scorecard = root / f"{name}-s{seed}" / "evaluate" / "scorecard.json"
            done = args.summary_only or (args.reuse and scorecard.is_file())
            cards[seed] = json.loads(scorecard.read_text()) if done else run_seed(argv, "all")
            print(f"{rung} seed {seed}: {sum(g['met'] for g in cards[seed]['goals'].values())} of "
                  f"{len(cards[seed]['goals'])} goals met", flush=True)
            if rung == REALISTIC:
                for n in args.probes:
                    probed = root / f"{name}-s{seed}-p{n}" / "evaluate" / "scorecard.json"
                    done = args.summary_only or (args.reuse and probed.is_file())
                    card = json.loads(probed.read_text()) if done else with_probes(
                        root, f"{name}-s{seed}", n, argv[:-1], seed)
                    result["probes"].setdefault(n, {})[seed] = card
        summary = summarise(cards)
        result["rungs"][rung] = summary | {"shown": shown(summary),
                                           "quality": {s: observer_quality(c) for s, c in cards.items()}}
    result["probes"] = {n: summarise(cards) | {"shown": shown(summarise(cards)),
                                               "quality": {s: observer_quality(c) for s, c in cards.items()}}
                        for n, cards in result["probes"].items()}
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"observer_ladder_{base}.json"
    earlier = json.loads(path.read_text()) if path.is_file() else {}
    if args.summary_only and earlier:
        result |= {k: earlier[k] for k in ("date", "machine")}
        result["command"] = " ".join(a for a in result["command"].split() if a != "--summary-only")
    # rungs (and probe counts) measured by an earlier command stay, with the command and seeds that made them
    for key in ("rungs", "probes"):
        for name, entry in earlier.get(key, {}).items():
            if name not in result[key] and str(name) not in {str(k) for k in result[key]}:
                result[key][name] = entry
    for entry in list(result["rungs"].values()) + list(result["probes"].values()):
        entry.setdefault("command", result["command"])
        entry.setdefault("seeds", seeds)
    path.write_text(json.dumps(result, indent=1, default=str))
    figure(result, path.with_suffix(".png"))
    order = [r for r in ("supervised", "captions", "shifted") if r in result["rungs"]]
    columns = {rung: result["rungs"][rung] for rung in order} | {
        f"{REALISTIC} + {n} probes": e for n, e in sorted(result["probes"].items(), key=lambda kv: int(kv[0]))}
    print(f"\n=== observer ladder: {base}, seeds {seeds} ===")
    print("\n".join(table(columns)))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
