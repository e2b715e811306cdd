"""The shard plan: what a folder of shards was made from, refused mixes, checked shard contents."""
import json

import numpy as np
import pyarrow as pa
import pytest

from conceptlens.pipeline.shards import (IncompleteShards, ShardPlan, batch_to_table, fingerprint, made_from,
                                         rows_digest, write_atomic)

MODELS = {"classifier": "a1b2c3d4e5f6", "vlm": "0123456789ab"}


def table(n=10, **override):
    columns = {"id": [f"r{i}" for i in range(n)], "path": [f"/img/{i}.png" for i in range(n)],
               "split": ["test"] * n, "label": ["cat", "dog"] * (n // 2), "label_index": [0, 1] * (n // 2),
               "caption": ["a cat"] * n}
    return pa.table(columns | override)


def plan(folder, rows=None, models=MODELS, image_size=48, shard_size=4):
    rows = table() if rows is None else rows
    return ShardPlan(folder, rows.column("id").to_pylist(), shard_size, made_from(models, image_size, rows))


def test_the_rows_digest_covers_what_decides_an_output_row_and_nothing_else():
    base = rows_digest(table())
    assert rows_digest(table()) == base
    assert rows_digest(table(caption=["a dog"] * 10)) == base  # pass-through columns do not decide the output
    for column, values in [("id", [f"x{i}" for i in range(10)]), ("path", [f"/other/{i}.png" for i in range(10)]),
                           ("split", ["calib"] * 10), ("label_index", [1, 0] * 5)]:
        assert rows_digest(table(**{column: values})) != base, column
    assert rows_digest(table().take([1, 0, *range(2, 10)])) != base  # the order is part of the input


def test_a_folder_made_from_the_same_input_resumes(tmp_path):
    first = plan(tmp_path / "s")
    assert first.count == 3 and first.pending() == [0, 1, 2]
    write_atomic(pa.table({"id": ["r0", "r1", "r2", "r3"]}), first.path(0))
    stamp = (tmp_path / "s" / "_shards.json").stat().st_mtime_ns
    assert plan(tmp_path / "s").pending() == [1, 2]
    assert (tmp_path / "s" / "_shards.json").stat().st_mtime_ns == stamp
    record = json.loads((tmp_path / "s" / "_shards.json").read_text())
    assert record["classifier"] == MODELS["classifier"] and record["image_size"] == 48


@pytest.mark.parametrize("change, message", [
    (dict(models=MODELS | {"classifier": "c3d4e5f6a7b8"}), "the classifier changed (a1b2c3d4e5f6 → c3d4e5f6a7b8)"),
    (dict(models=MODELS | {"vlm": "ffffffffffff"}), "the VLM changed (0123456789ab → ffffffffffff)"),
    (dict(image_size=64), "the image size (data.image_size) changed (48 → 64)"),
    (dict(shard_size=5), "the shard size (embed.shard_size) changed (4 → 5)"),
    (dict(rows=table(path=[f"/moved/{i}.png" for i in range(10)])), "the input rows (id, path, label, split) changed"),
    (dict(rows=table(8)), "the number of rows changed (10 → 8)"),
])
def test_a_folder_made_from_anything_else_is_refused_saying_what_differs(tmp_path, change, message):
    plan(tmp_path / "s")
    write_atomic(pa.table({"id": ["r0", "r1", "r2", "r3"]}), tmp_path / "s" / "part-00000.parquet")
    before = (tmp_path / "s" / "_shards.json").read_text()
    with pytest.raises(ValueError) as err:
        plan(tmp_path / "s", **change)
    assert message in str(err.value)
    assert "use another run.name, or delete" in str(err.value)
    assert (tmp_path / "s" / "_shards.json").read_text() == before  # the record of the shards on disk stays


def test_a_folder_of_the_older_format_is_refused_as_made_from_unknown_models(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    ids = table().column("id").to_pylist()
    (folder / "_shards.json").write_text(json.dumps({"rows": 10, "shard_size": 4, "fingerprint": fingerprint(ids, 4)}))
    with pytest.raises(ValueError, match="older conceptlens that did not record the models"):
        plan(folder)


def test_shards_without_a_record_are_refused(tmp_path):
    (tmp_path / "s").mkdir()
    write_atomic(pa.table({"id": ["r0"]}), tmp_path / "s" / "part-00000.parquet")
    with pytest.raises(ValueError, match="no _shards.json"):
        plan(tmp_path / "s")


def batches(ids, size):
    """The rows ``ids`` as a stream of Arrow tables of ``size`` rows, as the embedding pool yields them."""
    return [batch_to_table({"id": np.array(ids[i:i + size], dtype=object), "v": np.ones((len(ids[i:i + size]), 2))})
            for i in range(0, len(ids), size)]


def test_a_stream_is_cut_into_its_shards(tmp_path):
    p = plan(tmp_path / "s")
    ids = p.ids[4:]  # shards 1 and 2 pending
    out = list(p.assemble([1, 2], batches(ids, 3)))
    assert [k for k, _ in out] == [1, 2]
    assert [rows.column("id").to_pylist() for _, rows in out] == [ids[:4], ids[4:]]


def test_a_stream_that_ends_short_or_runs_over_fails_loudly(tmp_path):
    p = plan(tmp_path / "s")
    stream = p.assemble([0, 1, 2], batches(p.ids[:9], 3))
    assert [k for k, _ in (next(stream), next(stream))] == [0, 1]
    with pytest.raises(IncompleteShards, match=r"9 rows arrived for 10 planned, 1 left unwritten; shards \[2\]"):
        next(stream)
    with pytest.raises(IncompleteShards, match="12 rows arrived for 10 planned, 2 left unwritten"):
        list(p.assemble([0, 1, 2], batches(p.ids + ["r0", "r1"], 4)))


def test_a_shard_with_the_wrong_rows_is_never_written(tmp_path):
    p = plan(tmp_path / "s")
    swapped = [p.ids[0], p.ids[2], p.ids[1], p.ids[3]]
    with pytest.raises(IncompleteShards, match=r"shard 0 \(part-00000.parquet\) would hold the wrong rows: at its "
                                               r"row 1 \(input row 1\) came 'r2', the plan says 'r1'"):
        list(p.assemble([0], batches(swapped, 4)))
    with pytest.raises(IncompleteShards, match="shard 1 .* came 'r0', the plan says 'r4'"):
        list(p.assemble([1], batches(p.ids[:4], 4)))  # rows of another shard
    p.check(2, ["r8", "r9"])  # the right rows pass
