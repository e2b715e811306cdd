"""Deterministic Parquet shards: the unit of resumption for batch jobs.

Row ``i`` of the input always lands in shard ``i // shard_size``. A shard's files are
written under a temporary name and renamed, so a shard file on disk is always complete;
a re-run skips the shards that exist and the final table has every row exactly once.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def fingerprint(ids: Iterable[str], shard_size: int) -> str:
    h = hashlib.sha256(str(shard_size).encode())
    for i in ids:
        h.update(str(i).encode() + b"\0")
    return h.hexdigest()[:16]


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
    """Which shards of a table are done in ``folder``; refuses a folder made from different input."""

    def __init__(self, folder: Path, ids: list[str], shard_size: int):
        self.folder, self.shard_size, self.n = Path(folder), shard_size, len(ids)
        self.folder.mkdir(parents=True, exist_ok=True)
        meta = {"rows": self.n, "shard_size": shard_size, "fingerprint": fingerprint(ids, shard_size)}
        meta_path = self.folder / "_shards.json"
        if meta_path.exists() and json.loads(meta_path.read_text()) != meta:
            raise ValueError(f"{self.folder} holds shards of a different input or shard size; "
                             f"use another run.name or delete the folder")
        meta_path.write_text(json.dumps(meta))

    @property
    def count(self) -> int:
        return -(-self.n // self.shard_size)

    def path(self, shard: int) -> Path:
        return self.folder / f"part-{shard:05d}.parquet"

    def rows(self, shard: int) -> tuple[int, int]:
        start = shard * self.shard_size
        return start, min(start + self.shard_size, self.n)

    def pending(self) -> list[int]:
        return [k for k in range(self.count) if not self.path(k).exists()]
