"""The per-row predictions ``embed`` logs to MLflow (``predictions.parquet``), the smallest table that lets
``conceptlens compare`` pair two runs row by row.

An id names a row within one dataset only: ConceptWorld's ``test-000001`` is another image in every world seed.
So each row carries the SHA-256 of its image file's content (``digest``, 16 hex digits; null where the file cannot
be read from here, e.g. a remote URL): two runs' rows are the same image when their ids *and* digests agree
(their paths where a digest is missing). Only the held-out ``test`` rows are written: the rows every accuracy
that ``compare`` reads (scorecard, monitor) is measured on.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

PREDICTIONS = "predictions.parquet"
COLUMNS = ("id", "path", "label", "label_index", "prediction")  # read from the embeddings table, in this order
SPLITS = ("test",)


def _digest(path: str) -> str | None:
    from conceptlens.models.embedding import file_digest

    try:
        return file_digest(path)
    except OSError:  # not a local file (a URL, a file gone since): paired by path instead
        return None


def image_digests(paths: Sequence[str], workers: int = 8) -> list[str | None]:
    """The content digest (16 hex digits of SHA-256) of each image file, None where it cannot be read."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_digest, paths, chunksize=64))


def predictions_table(embeddings: Path, splits: Sequence[str] = SPLITS) -> pa.Table:
    """``id, path, digest, label, label_index, prediction`` of the ``splits`` rows of an embeddings table (a folder
    of Parquet shards), ordered by id."""
    table = pq.read_table(embeddings, columns=["split", *COLUMNS])
    table = table.filter(pc.is_in(table["split"], pa.array(list(splits)))).drop_columns(["split"])
    table = table.sort_by("id")
    digests = pa.array(image_digests(table["path"].to_pylist()), pa.string())
    return table.add_column(2, "digest", digests)


def write_predictions(embeddings: Path, path: Path, splits: Sequence[str] = SPLITS) -> int:
    """Write :func:`predictions_table` to ``path``; the number of rows written."""
    table = predictions_table(embeddings, splits)
    pq.write_table(table, path)
    return table.num_rows
