"""Generate a ConceptWorld: PNG images plus a Parquet manifest with the planted truth.

Each image is drawn from its own generator seeded by ``(seed, split, index)``, so the world
is identical whatever the number of worker processes, and a split can be regenerated alone.
"""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from conceptlens.world.render import render
from conceptlens.world.scenarios import Scenario
from conceptlens.world.vocabulary import ATTRIBUTE_GROUPS, CLASSES, caption

SPLITS = ("train", "vlm", "calib", "test")
MANIFEST = "manifest.parquet"


def sample_image(seed: int, split: str, index: int, scenarios: Sequence[Scenario]):
    """The label, attributes, scenario and generator of one image (the generator then draws it)."""
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    label = CLASSES[rng.integers(len(CLASSES))]
    attributes = {g.name: g.values[rng.choice(len(g.values), p=np.array(g.weights) / sum(g.weights))]
                  for g in ATTRIBUTE_GROUPS}
    if split == "train":
        for scenario in scenarios:
            scenario.bend(label, attributes, rng)
    scenario = next((s.name for s in scenarios if s.contains(label, attributes)), None)
    return label, attributes, scenario, rng


def _render_chunk(args) -> list[dict]:
    root, seed, split, indices, scenarios, size = args
    rows = []
    for i in indices:
        label, attributes, scenario, rng = sample_image(seed, split, i, scenarios)
        path = f"images/{split}/{i:06d}.png"
        Image.fromarray(render(label, attributes, rng, size)).save(Path(root) / path, compress_level=1)
        rows.append({"id": f"{split}-{i:06d}", "path": path, "split": split, "label": label,
                     "label_index": CLASSES.index(label), "scenario": scenario,
                     "caption": caption(label, attributes), **attributes})
    return rows


def manifest_schema() -> pa.Schema:
    fields = [("id", pa.string()), ("path", pa.string()), ("split", pa.string()), ("label", pa.string()),
              ("label_index", pa.int64()), ("scenario", pa.string()), ("caption", pa.string())]
    fields += [(g.name, pa.string()) for g in ATTRIBUTE_GROUPS]
    fields += [(f"{g.name}_{v}", pa.bool_()) for g in ATTRIBUTE_GROUPS for v in g.values]
    return pa.schema(fields)


def generate_world(root: str | os.PathLike, *, seed: int, image_size: int, split_sizes: dict[str, int],
                   scenarios: Sequence[Scenario], workers: int | None = None,
                   progress: Callable[[int, int], None] | None = None) -> pa.Table:
    """Draw every split into ``root/images/<split>/`` and write ``root/manifest.parquet``.

    Returns the manifest: one row per image with ``id, path`` (relative to ``root``), ``split, label, label_index,
    scenario`` (``None`` outside every planted slice), ``caption``, one string column per
    attribute group and one boolean column per attribute value.
    The manifest is written last, so its presence marks a complete world.
    """
    root = Path(root)
    unknown = set(split_sizes) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown split(s) {sorted(unknown)}; splits are {SPLITS}")
    jobs = []
    for split, n in split_sizes.items():
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        jobs += [(str(root), seed, split, range(s, min(s + 500, n)), tuple(scenarios), image_size)
                 for s in range(0, n, 500)]
    total, done, rows = sum(split_sizes.values()), 0, []
    with ProcessPoolExecutor(max_workers=workers or min(os.cpu_count() or 1, 8)) as pool:
        for chunk in pool.map(_render_chunk, jobs):
            rows += chunk
            done += len(chunk)
            if progress:
                progress(done, total)
    for row in rows:
        for g in ATTRIBUTE_GROUPS:
            for v in g.values:
                row[f"{g.name}_{v}"] = row[g.name] == v
    table = pa.Table.from_pylist(rows, schema=manifest_schema())
    pq.write_table(table, root / MANIFEST)
    return table


def read_manifest(root: str | os.PathLike) -> pa.Table:
    """The manifest of a world, with ``path`` made absolute."""
    root = Path(root).resolve()
    table = pq.read_table(root / MANIFEST)
    paths = pa.array([str(root / p) for p in table.column("path").to_pylist()])
    return table.set_column(table.schema.get_field_index("path"), "path", paths)


def split_arrays(manifest: pa.Table, split: str) -> dict:
    """One split of a world's manifest as arrays: ``paths`` (list), ``labels`` int (N,), ``attributes``
    {group: value index (N,)} and ``scenarios`` object (N,) (the planted scenario's name or ``None``)."""
    t = manifest.filter(pc.equal(manifest["split"], split))
    return {
        "paths": t.column("path").to_pylist(),
        "labels": np.asarray(t.column("label_index").to_pylist()),
        "attributes": {g.name: np.array([g.values.index(v) for v in t.column(g.name).to_pylist()])
                       for g in ATTRIBUTE_GROUPS},
        "scenarios": np.array(t.column("scenario").to_pylist(), dtype=object),
    }
