"""Generate a ConceptWorld: PNG images, the manifest every command reads, and the planted truth beside it.

``manifest.parquet`` holds the data (``id, path, split, label, label_index``), as a user's manifest would;
``truth.parquet`` holds what only the world, its recipes and the scorecard may read (each row's scenario,
caption and attributes), keyed by ``id``. Keeping the truth in its own file keeps it out of the embeddings
table and every analysis by construction.

Each image is drawn from its own generator seeded by ``(seed, split, index)``, so the world
is identical whatever the number of worker processes, and a split can be regenerated alone.
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from conceptlens.pipeline.datasets import CLASSES_KEY, COLUMNS
from conceptlens.world.render import render
from conceptlens.world.scenarios import Scenario
from conceptlens.world.vocabulary import ATTRIBUTE_GROUPS, CLASSES, caption

SPLITS = ("train", "vlm", "calib", "test")
MANIFEST = "manifest.parquet"  # the data: what every command reads
TRUTH = "truth.parquet"  # the planted truth, beside it: read only by world/, recipes/ and evaluation/
DATA_COLUMNS = COLUMNS  # the manifest holds what a user's does: id, path, split, label, label_index


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
    root, seed, split, indices, scenarios, size, style = args
    rows = []
    for i in indices:
        label, attributes, scenario, rng = sample_image(seed, split, i, scenarios)
        path = f"images/{split}/{i:06d}.png"
        Image.fromarray(render(label, attributes, rng, size, style)).save(Path(root) / path, compress_level=1)
        rows.append({"id": f"{split}-{i:06d}", "path": path, "split": split, "label": label,
                     "label_index": CLASSES.index(label), "scenario": scenario,
                     "caption": caption(label, attributes), **attributes})
    return rows


def manifest_schema() -> pa.Schema:
    """The manifest's columns (the data) and its class order (schema metadata ``conceptlens.classes``, which
    :func:`conceptlens.pipeline.datasets.read_dataset` takes as the classifier's order)."""
    fields = [("id", pa.string()), ("path", pa.string()), ("split", pa.string()), ("label", pa.string()),
              ("label_index", pa.int64())]
    return pa.schema(fields, metadata={CLASSES_KEY: json.dumps(list(CLASSES))})


def truth_schema() -> pa.Schema:
    """The truth's columns: ``id``, ``scenario``, ``caption``, one string column per attribute group and one
    boolean column per attribute value."""
    fields = [("id", pa.string()), ("scenario", pa.string()), ("caption", pa.string())]
    fields += [(g.name, pa.string()) for g in ATTRIBUTE_GROUPS]
    fields += [(f"{g.name}_{v}", pa.bool_()) for g in ATTRIBUTE_GROUPS for v in g.values]
    return pa.schema(fields)


def generate_world(root: str | os.PathLike, *, seed: int, image_size: int, split_sizes: dict[str, int],
                   scenarios: Sequence[Scenario], workers: int | None = None,
                   progress: Callable[[int, int], None] | None = None, style: str = "default") -> pa.Table:
    """Draw every split into ``root/images/<split>/`` and write ``root/truth.parquet`` and ``root/manifest.parquet``.

    Returns the manifest: one row per image with ``id, path`` (relative to ``root``), ``split, label, label_index``
    (:func:`manifest_schema`). The truth (:func:`truth_schema`: ``scenario``, ``None`` outside every planted
    slice, ``caption``, the attributes) goes to ``truth.parquet``, read with :func:`read_truth`.
    The manifest is written last, so its presence marks a complete world. ``style``: how it looks
    (:data:`~conceptlens.world.render.STYLES`); the same seed draws the same scenes in every style.
    """
    root = Path(root)
    unknown = set(split_sizes) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown split(s) {sorted(unknown)}; splits are {SPLITS}")
    jobs = []
    for split, n in split_sizes.items():
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        jobs += [(str(root), seed, split, range(s, min(s + 500, n)), tuple(scenarios), image_size, style)
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
    pq.write_table(pa.Table.from_pylist(rows, schema=truth_schema()), root / TRUTH)
    table = pa.Table.from_pylist(rows, schema=manifest_schema())
    pq.write_table(table, root / MANIFEST)
    return table


def read_manifest(root: str | os.PathLike) -> pa.Table:
    """The manifest of a world (the data, :func:`manifest_schema`'s columns, never the truth), with ``path`` made
    absolute. A world written before the truth had its own file is read the same way."""
    root = Path(root).resolve()
    table = pq.read_table(root / MANIFEST, columns=list(DATA_COLUMNS))
    table = table.replace_schema_metadata(manifest_schema().metadata)
    paths = pa.array([str(root / p) for p in table.column("path").to_pylist()], pa.string())
    return table.set_column(table.schema.get_field_index("path"), "path", paths)


def _has_truth(manifest: Path) -> bool:
    """Whether a manifest still holds truth columns (a world written before ``truth.parquet`` existed)."""
    return bool(set(pq.read_schema(manifest).names) - set(DATA_COLUMNS))


def read_truth(root: str | os.PathLike) -> pa.Table:
    """The truth of a world, :func:`truth_schema`'s columns, one row per manifest row (``id`` joins them).

    From ``root/truth.parquet``; a world (or run folder) written before the truth had its own file keeps it in
    ``manifest.parquet``, and it is read from there. FileNotFoundError when neither holds it."""
    root = Path(root)
    names = truth_schema().names
    if (root / TRUTH).is_file():
        return pq.read_table(root / TRUTH, columns=names)
    if (root / MANIFEST).is_file() and _has_truth(root / MANIFEST):
        return pq.read_table(root / MANIFEST, columns=names)
    raise FileNotFoundError(f"no ConceptWorld truth at {root} (no {TRUTH})")


def _write_atomic(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    pq.write_table(table, tmp)
    tmp.replace(path)


def split_truth(root: str | os.PathLike) -> bool:
    """Move the truth of a world written in the old one-file layout out of its manifest, in place: write
    ``truth.parquet``, then rewrite ``manifest.parquet`` with the data columns alone (each to a temporary file,
    then renamed, so a reader sees either file whole and an interrupted split is finished by the next call).
    True when it split something; False when the world already has the new layout."""
    root = Path(root)
    manifest = root / MANIFEST
    if not _has_truth(manifest):
        return False
    if not (root / TRUTH).is_file():
        _write_atomic(pq.read_table(manifest, columns=truth_schema().names), root / TRUTH)
    data = pq.read_table(manifest, columns=list(DATA_COLUMNS))
    _write_atomic(data.replace_schema_metadata(manifest_schema().metadata), manifest)
    return True


def split_arrays(root: str | os.PathLike, split: str) -> dict:
    """One split of a world as arrays, its manifest joined with its truth by ``id``: ``ids`` object (N,), ``paths``
    (list, absolute), ``labels`` int (N,), ``attributes`` {group: value index (N,)} and ``scenarios`` object (N,)
    (the planted scenario's name or ``None``), in the manifest's row order."""
    manifest = read_manifest(root)
    t = manifest.filter(pc.equal(manifest["split"], split))
    ids = t.column("id").to_pylist()
    truth = read_truth(root)
    position = {row_id: i for i, row_id in enumerate(truth.column("id").to_pylist())}
    missing = [i for i in ids if i not in position]
    if missing:
        raise ValueError(f"{len(missing)} rows of {Path(root) / MANIFEST} (first {missing[0]!r}) have no truth "
                         f"in {Path(root) / TRUTH}")
    truth = truth.take(pa.array([position[i] for i in ids], pa.int64()))
    return {
        "ids": np.array(ids, dtype=object),
        "paths": t.column("path").to_pylist(),
        "labels": np.asarray(t.column("label_index").to_pylist()),
        "attributes": {g.name: np.array([g.values.index(v) for v in truth.column(g.name).to_pylist()], dtype=np.int64)
                       for g in ATTRIBUTE_GROUPS},
        "scenarios": np.array(truth.column("scenario").to_pylist(), dtype=object),
    }
