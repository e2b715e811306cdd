"""Concept probes drawn from a world's truth: what a user labelling a few examples per concept would hand over
(``analyze.probes``), for the benchmarks that measure how many probes buy how much."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from conceptlens.world.generate import split_arrays
from conceptlens.world.vocabulary import ATTRIBUTE_GROUPS


def write_probes(world: str | os.PathLike, out: str | os.PathLike, per_concept: int, *, split: str = "vlm",
                 seed: int = 0) -> dict[str, int]:
    """A probe folder ``out/<group=value>/<id>.png`` (links to the world's images) with ``per_concept`` images of
    ``split`` showing each attribute value, drawn at random; returns how many each concept got. Rewrites ``out``."""
    data = split_arrays(world, split)
    out = Path(out)
    rng = np.random.default_rng(seed)
    counts = {}
    for g in ATTRIBUTE_GROUPS:
        for j, value in enumerate(g.values):
            folder = out / f"{g.name}={value}"
            folder.mkdir(parents=True, exist_ok=True)
            for stale in folder.iterdir():
                stale.unlink()
            rows = np.flatnonzero(data["attributes"][g.name] == j)
            picked = rng.choice(rows, min(per_concept, len(rows)), replace=False)
            for i in picked:
                (folder / f"{data['ids'][i]}.png").symlink_to(Path(data["paths"][i]).resolve())
            counts[f"{g.name}={value}"] = len(picked)
    return counts
