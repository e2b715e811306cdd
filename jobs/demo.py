"""conceptlens demo: the whole pipeline on ConceptWorld, then a summary of what it found and where it is.

Today the pipeline is: build ConceptWorld and train (or reuse) its classifier and tiny CLIP.
Runs under ``runs/demo/`` unless ``run.name`` says otherwise.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Sequence

from conceptlens.cli import parse_config
from conceptlens.jobs import world


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_config("demo", __doc__, argv)
    if cfg.run.name == "default":
        cfg.run.name = "demo"
    start = time.time()
    metrics = world.run(cfg)
    run = Path(cfg.run.root) / cfg.run.name
    print("\n=== ConceptLens demo ===")
    print(world.summary(metrics))
    print(f"\nfinished in {(time.time() - start) / 60:.1f} min; outputs under {run.resolve()}:")
    for path in sorted(run.glob("*/*")):
        print(f"  {path}")
    return 0 if all(metrics["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
