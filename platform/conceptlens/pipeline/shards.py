"""Deterministic Parquet shards: the unit of resumption for batch jobs.

Row ``i`` of the input always lands in shard ``i // shard_size``. A shard's files are
written under a temporary name and renamed, so a shard file on disk is always complete;
a re-run skips the shards that exist and the final table has every row exactly once.
``_shards.json`` records what the shards were made from (models, image size, input rows), so
a re-run that would mix rows of two different runs is refused instead.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


FORMAT = 2  # of ``_shards.json``; format 1 recorded only the row ids
ROW_COLUMNS = ("id", "path", "label", "label_index", "split")  # what decides an output row (image bytes aside)
NAMES = {"classifier": "the classifier", "vlm": "the VLM", "image_size": "the image size (data.image_size)",
         "shard_size": "the shard size (embed.shard_size)", "row_count": "the number of rows",
         "rows": "the input rows (id, path, label, split)", "ids": "the row ids"}


class IncompleteShards(RuntimeError):
    """The rows that arrived do not fill the planned shards exactly: a bug or lost rows, never bad input."""


def fingerprint(ids: Iterable[str], shard_size: int) -> str:
    """16 hex digits over the row ids in order and the shard size (what format 1 recorded)."""
    h = hashlib.sha256(str(shard_size).encode())
    for i in ids:
        h.update(str(i).encode() + b"\0")
    return h.hexdigest()[:16]


def rows_digest(table: pa.Table, columns: Sequence[str] = ROW_COLUMNS, chunk: int = 65536) -> str:
    """16 hex digits over the values of ``columns`` (those ``table`` has), row by row in order."""
    h = hashlib.sha256()
    for name in (c for c in columns if c in table.column_names):
        h.update(f"\x1e{name}\x1e".encode())
        column = table.column(name)
        for start in range(0, len(column), chunk):
            h.update("\x1f".join(map(str, column.slice(start, chunk).to_pylist())).encode() + b"\x1f")
    return h.hexdigest()[:16]


def made_from(models: Mapping[str, str], image_size: int, table: pa.Table) -> dict[str, Any]:
    """What an embeddings shard depends on: the models' fingerprints (``ModelSpec.fingerprint()``), the
    image size and the input rows; ``ShardPlan`` refuses a folder made from anything else."""
    return {**models, "image_size": int(image_size), "rows": rows_digest(table)}


def changes(before: Mapping[str, Any], after: Mapping[str, Any], names: Mapping[str, str] = NAMES) -> list[str]:
    """``["the classifier changed (a1b2 → c3d4)", ...]`` for every key whose value differs (missing =
    ``unknown``), in the order of ``after``; keys not in ``names`` are named as they are."""
    keys = list(after) + [k for k in before if k not in after]
    return [f"{names.get(k, k)} changed ({before.get(k, 'unknown')} → {after.get(k, 'unknown')})"
            for k in keys if before.get(k) != after.get(k)]


def batch_to_table(batch: dict[str, np.ndarray], schema: pa.Schema | None = None) -> pa.Table:
    """A NumPy batch as Arrow: 2-D float arrays become fixed-size float32 lists; columns named in
    ``schema`` keep its types (so a batch whose column is all null still matches the others)."""
    columns = {}
    for name, values in batch.items():
        if isinstance(values, np.ndarray) and values.ndim == 2:
            flat = pa.array(np.ascontiguousarray(values, dtype=np.float32).ravel())
            columns[name] = pa.FixedSizeListArray.from_arrays(flat, values.shape[1])
        else:
            kind = schema.field(name).type if schema is not None and name in schema.names else None
            if kind is not None and not pa.types.is_floating(kind) and values.dtype.kind == "f" \
                    and np.isnan(values).all():
                values = np.full(len(values), None, dtype=object)  # an all-null column may arrive as NaNs
            columns[name] = pa.array(list(values) if isinstance(values, np.ndarray) and values.dtype == object
                                     else values, type=kind)
    return pa.table(columns)


def vectors(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A fixed-size list column (as :func:`batch_to_table` writes vectors) as ``float32 (N, D)``."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(column), column.type.list_size)


def write_atomic(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    pq.write_table(table, tmp)
    tmp.rename(path)


class ShardPlan:
    """Which shards of a table are done in ``folder``, and which rows each one must hold.

    ``made_from`` (see :func:`made_from`) is recorded in ``_shards.json`` with the row count,
    the shard size and the ids; a folder whose record differs, is of the older format or has
    shards but no record is refused with a ``ValueError`` that says what differs."""

    def __init__(self, folder: Path, ids: Sequence[str], shard_size: int, made_from: Mapping[str, Any] | None = None):
        self.folder, self.shard_size, self.ids = Path(folder), shard_size, [str(i) for i in ids]
        self.n = len(self.ids)
        self.folder.mkdir(parents=True, exist_ok=True)
        meta = {"format": FORMAT, "row_count": self.n, "shard_size": shard_size,
                "ids": fingerprint(self.ids, shard_size), **(made_from or {})}
        if not self._already_recorded(meta):
            write_text_atomic(json.dumps(meta, indent=1), self.folder / "_shards.json")

    def _already_recorded(self, meta: dict) -> bool:
        """Whether ``_shards.json`` already records ``meta``; raise if it records anything else."""
        path = self.folder / "_shards.json"
        todo = f"use another run.name, or delete {self.folder} to recompute"
        if not path.exists():
            if any(self.folder.glob("part-*.parquet")):
                raise ValueError(f"{self.folder} holds shards but no _shards.json saying what they were made "
                                 f"from; {todo}")
            return False
        stored = json.loads(path.read_text())
        if stored.get("format") != FORMAT:
            raise ValueError(f"{self.folder} holds shards of an older conceptlens that did not record the models, "
                             f"image size and input rows they were made from, so they may be of a different input; "
                             f"{todo}")
        differ = changes(stored, meta)
        if len(differ) > 1:  # the ids are part of the input rows; name them only when nothing else explains it
            differ = [d for d in differ if not d.startswith(NAMES["ids"])]
        if differ:
            raise ValueError(f"{self.folder} holds shards of a different input: {'; '.join(differ)}; {todo}")
        return True

    @property
    def count(self) -> int:
        return -(-self.n // self.shard_size)

    def path(self, shard: int) -> Path:
        return self.folder / f"part-{shard:05d}.parquet"

    def rows(self, shard: int) -> tuple[int, int]:
        start = shard * self.shard_size
        return start, min(start + self.shard_size, self.n)

    def size(self, shard: int) -> int:
        start, end = self.rows(shard)
        return end - start

    def pending(self) -> list[int]:
        return [k for k in range(self.count) if not self.path(k).exists()]

    def check(self, shard: int, ids: Sequence[str]) -> None:
        """Raise :class:`IncompleteShards` unless ``ids`` are exactly shard ``shard``'s ids, in order."""
        start, end = self.rows(shard)
        want, got = self.ids[start:end], [str(i) for i in ids]
        if got == want:
            return
        j = next((j for j, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        found = repr(got[j]) if j < len(got) else "nothing"
        wanted = repr(want[j]) if j < len(want) else "no row"
        raise IncompleteShards(f"shard {shard} ({self.path(shard).name}) would hold the wrong rows: at its row {j} "
                               f"(input row {start + j}) came {found}, the plan says {wanted} "
                               f"({len(got)} rows, {len(want)} planned); nothing written")

    def assemble(self, pending: Sequence[int], tables: Iterable[pa.Table]) -> Iterator[tuple[int, pa.Table]]:
        """Cut a stream of row tables (the rows of the ``pending`` shards, in input order) into
        ``(shard, rows)``, each checked with :meth:`check`. Raises :class:`IncompleteShards` when
        the stream ends with shards unfilled or rows left over."""
        queue, buffered, seen = list(pending), [], 0
        for table in tables:
            buffered.append(table)
            seen += table.num_rows
            while queue and sum(t.num_rows for t in buffered) >= self.size(queue[0]):
                rows, n = pa.concat_tables(buffered), self.size(queue[0])
                self.check(queue[0], rows.column("id").to_pylist()[:n])
                yield queue.pop(0), rows.slice(0, n)
                buffered = [rows.slice(n)] if rows.num_rows > n else []
        left = sum(t.num_rows for t in buffered)
        if queue or left:
            expected = sum(self.size(k) for k in pending)
            unwritten = f"; shards {queue} not written" if queue else ""
            raise IncompleteShards(f"{self.folder}: {seen} rows arrived for {expected} planned, "
                                   f"{left} left unwritten{unwritten}; a re-run retries the missing shards")


def write_text_atomic(text: str, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    tmp.rename(path)


ROW_BATCH_COLUMNS = ["split", "label_index", "prediction", "logits", "features", "vlm_embedding"]


def read_rows(folder: Path, splits: Sequence[str], extra: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """The given splits of an embeddings table (a folder of Parquet shards) as a NumPy batch: the model columns
    every detector reads, plus ``extra``; vectors as 2-D arrays."""
    if not any(folder.glob("*.parquet")):
        raise FileNotFoundError(f"no embeddings at {folder}")
    table = pq.read_table(folder, columns=ROW_BATCH_COLUMNS + list(extra))
    table = table.filter(pc.is_in(table["split"], pa.array(list(splits))))
    return {name: vectors(table[name]) if pa.types.is_fixed_size_list(table.schema.field(name).type)
            else table[name].to_numpy() for name in table.column_names}
