"""Cost of `conceptlens neurons`' counterfactual solver: all mistakes as one batched problem against one optimiser
per mistake, as NeuroInspect's reference code runs it.

Reads a run's embeddings (``--run``, a folder `conceptlens demo` wrote) and its classifier, takes the mistakes of
``--split``, and solves them both ways with the same settings (``neurons.counterfactual``'s defaults), in this
process, with the same threads. Prints the seconds, the speed ratio and how far the two solutions differ (shifts,
steps, which flipped). ``--repeat`` stacks the mistakes that many times (a larger user's run).

    .venv/bin/python benchmarks/neurons.py --run runs/demo
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from conceptlens.config import CounterfactualConfig
from conceptlens.models import ModelSpec
from conceptlens.neurons import SolverSettings, solve, solve_one_by_one
from conceptlens.pipeline.shards import read_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a run folder with world/models.json and embed/ (e.g. runs/demo)")
    parser.add_argument("--split", default="calib")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run = Path(args.run)
    models = json.loads((run / "world" / "models.json").read_text())
    head = ModelSpec("resnet18", models["classifier"], "fc", 10, "conceptworld-tiny", models["vlm"]).classifier().head
    rows = read_rows(run / "embed" / "embeddings", [args.split])
    wrong = rows["label_index"] != rows["prediction"]
    features = np.tile(rows["features"][wrong], (args.repeat, 1))
    targets = np.tile(rows["label_index"][wrong], args.repeat)
    c = CounterfactualConfig()
    settings = SolverSettings(c.alpha, c.beta, c.lr, c.momentum, c.max_steps)

    start = time.perf_counter()
    batched = solve(head, features, targets, settings)
    t_batched = time.perf_counter() - start
    start = time.perf_counter()
    loop = solve_one_by_one(head, features, targets, settings)
    t_loop = time.perf_counter() - start

    print(f"{len(targets)} mistakes of {args.split} ({wrong.sum()} x {args.repeat}), {features.shape[1]} neurons, "
          f"{args.threads} thread(s); median {np.median(batched.steps):.0f} steps, max {batched.steps.max()}")
    print(f"{'how':<28}{'seconds':>9}{'mistakes/s':>12}{'vs loop':>9}")
    for how, seconds in (("one optimiser per mistake", t_loop), ("batched (neurons.solve)", t_batched)):
        print(f"{how:<28}{seconds:>9.2f}{len(targets) / seconds:>12.0f}{t_loop / seconds:>8.1f}x")
    print(f"same results: largest shift difference {np.abs(batched.shift - loop.shift).max():.1e}, "
          f"steps equal {bool((batched.steps == loop.steps).all())}, flipped equal "
          f"{bool((batched.flipped == loop.flipped).all())} ({batched.flipped.mean():.0%} flipped)")


if __name__ == "__main__":
    main()
