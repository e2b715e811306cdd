"""Read a user's dataset into the manifest every job starts from.

A source is a manifest (Parquet or CSV with ``path`` and ``label``, optional ``id``,
``split`` and any other columns, which pass through) or an image folder with one
sub-folder per class. Relative paths in a manifest are relative to the manifest's folder.

Files of an image folder that are not images (by suffix) are left out and named (:func:`skipped_files`).
Ids: a manifest's ``id`` column, else the row number; in an image folder, the image's path
relative to the folder (``cat/0001.png``), so ids stay put when images are added.
Splits: a manifest's ``split`` column where it has a value; every other row gets a held-out
split from its id (:func:`hash_split`), the same in every command and on every machine.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

CLASSES_KEY = "conceptlens.classes"  # schema metadata: the class order behind label_index
SKIPPED_KEY = "conceptlens.skipped"  # schema metadata: files of an image folder that are not images, left out
COLUMNS = ("id", "path", "split", "label", "label_index")  # what read_dataset makes of every source, first
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff"}


def id_unit(id_: str) -> float:
    """The first 8 bytes of the id's UTF-8 SHA-256 as a number in [0, 1): uniform, and the same everywhere."""
    return int.from_bytes(hashlib.sha256(str(id_).encode()).digest()[:8], "big") / 2.0**64


def hash_split(ids: Sequence[str], calib_share: float = 0.5) -> list[str]:
    """``calib`` where :func:`id_unit` of the id is below ``calib_share``, else ``test``: a row's split
    depends on its id alone, not on the other rows or their order."""
    if not 0.0 <= calib_share <= 1.0:
        raise ValueError(f"data.calib_share must lie in [0, 1], got {calib_share}")
    return ["calib" if id_unit(i) < calib_share else "test" for i in ids]


def _image_folder(root: Path) -> pa.Table:
    files = [p for p in sorted(root.glob("*/*")) if p.is_file()]
    rows = [{"id": p.relative_to(root).as_posix(), "path": str(p.resolve()), "label": p.parent.name}
            for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    if not rows:
        raise ValueError(f"image folder {root} has no images in class sub-folders (<root>/<class>/<image>)")
    skipped = [p.relative_to(root).as_posix() for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
    return pa.Table.from_pylist(rows).replace_schema_metadata({SKIPPED_KEY: json.dumps(skipped)})


def _manifest(path: Path) -> pa.Table:
    table = pq.read_table(path) if path.suffix == ".parquet" else pcsv.read_csv(path)
    missing = {"path", "label"} - set(table.column_names)
    if missing:
        raise ValueError(f"manifest {path} lacks column(s) {sorted(missing)}; it has {table.column_names}")
    paths = [p if Path(p).is_absolute() else str((path.parent / p).resolve())
             for p in table.column("path").to_pylist()]
    return table.set_column(table.schema.get_field_index("path"), "path", pa.array(paths, pa.string()))


def stated_classes(table: pa.Table) -> list[str] | None:
    """The class order a table states: its schema's ``conceptlens.classes``, else a ``label_index`` column giving
    each ``label`` one index 0..K-1 (an embeddings table, or a manifest written before the key existed); None
    when it states none."""
    return _stated_order(table, [str(v) for v in table.column("label").to_pylist()])


def _stated_order(table: pa.Table, labels: list[str]) -> list[str] | None:
    """The class order a manifest states (see :func:`read_dataset`), or None."""
    stated = (table.schema.metadata or {}).get(CLASSES_KEY.encode())
    if stated:
        return json.loads(stated)
    if "label_index" not in table.column_names:
        return None
    pairs = set(zip(labels, table.column("label_index").to_pylist()))
    order = {i: label for label, i in pairs}
    if len(pairs) != len(order) or len(order) != len({label for label, _ in pairs}) or \
            sorted(order) != list(range(len(order))):
        return None  # not one index per label, or not 0..K-1: no order stated
    return [order[i] for i in range(len(order))]


def read_dataset(source: str | Path, *, classes: Sequence[str] | None = None, calib_share: float = 0.5) -> pa.Table:
    """The dataset as a table with ``id, path, split, label, label_index`` (strings, ``label_index`` int64)
    and pass-through columns.

    ``classes`` gives the classifier's output order; by default the order the manifest states (its schema's
    ``conceptlens.classes``, else a ``label_index`` column giving each label one index 0..K-1: a ConceptWorld
    manifest), else the sorted distinct labels.
    The order is kept in the schema metadata (:func:`classes_of`).
    A label outside ``classes`` is an error naming it. Rows without a split get
    :func:`hash_split` of their id with ``calib_share``.
    """
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"dataset source {source} does not exist")
    table = _image_folder(source) if source.is_dir() else _manifest(source)
    skipped = (table.schema.metadata or {}).get(SKIPPED_KEY.encode(), b"[]").decode()
    labels = [str(v) for v in table.column("label").to_pylist()]
    classes = list(classes) if classes else (_stated_order(table, labels) or sorted(set(labels)))
    unknown = sorted(set(labels) - set(classes))
    if unknown:
        raise ValueError(f"labels {unknown[:5]} are not among the classifier's classes {classes}")
    index = {c: i for i, c in enumerate(classes)}
    columns = {"label": pa.array(labels, pa.string()), "label_index": pa.array([index[v] for v in labels], pa.int64())}
    ids = ([str(v) for v in table.column("id").to_pylist()] if "id" in table.column_names
           else [f"{i:08d}" for i in range(table.num_rows)])
    columns["id"] = pa.array(ids, pa.string())
    given = table.column("split").to_pylist() if "split" in table.column_names else [None] * table.num_rows
    if not all(given):
        drawn = hash_split(ids, calib_share)
        columns["split"] = pa.array([str(g) if g else d for g, d in zip(given, drawn)], pa.string())
    for name, values in columns.items():
        if name in table.column_names:
            table = table.set_column(table.schema.get_field_index(name), name, values)
        else:
            table = table.append_column(name, values)
    table = table.select(list(COLUMNS) + [c for c in table.column_names if c not in COLUMNS])
    return table.replace_schema_metadata({CLASSES_KEY: json.dumps(classes), SKIPPED_KEY: skipped})


def skipped_files(table: pa.Table) -> list[str]:
    """The files of an image folder :func:`read_dataset` left out because they are not images (by suffix)."""
    return json.loads((table.schema.metadata or {}).get(SKIPPED_KEY.encode(), b"[]"))


def classes_of(table: pa.Table) -> list[str]:
    """The class order :func:`read_dataset` used (``label_index`` indexes it)."""
    return json.loads(table.schema.metadata[CLASSES_KEY.encode()])
