"""Held-out splits for data without a split column: drawn from a hash of the id, the same in every command."""
import hashlib
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conceptlens.pipeline.datasets import hash_split, id_unit, read_dataset


def images(root, names):
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (len(name) * 9 % 255, 0, 0)).save(root / name)
    return root


def test_the_split_follows_the_documented_rule():
    ids = [f"img-{i}" for i in range(50)]
    expected = ["calib" if int(hashlib.sha256(i.encode()).hexdigest()[:16], 16) / 2**64 < 0.3 else "test" for i in ids]
    assert hash_split(ids, 0.3) == expected
    assert all(0 <= id_unit(i) < 1 for i in ids)


def test_the_split_depends_on_the_id_alone_and_honours_the_share():
    ids = [f"{c}/{i:05d}.png" for c in ("bag", "coat") for i in range(3000)]
    splits = dict(zip(ids, hash_split(ids, 0.3)))
    assert dict(zip(ids[::-1], hash_split(ids[::-1], 0.3))) == splits  # order does not matter
    assert dict(zip(ids[:100], hash_split(ids[:100], 0.3))) == {i: splits[i] for i in ids[:100]}  # nor other rows
    share = sum(s == "calib" for s in splits.values()) / len(ids)
    assert abs(share - 0.3) < 4 * (0.3 * 0.7 / len(ids)) ** 0.5  # binomial, 4 standard deviations
    assert set(hash_split(ids, 0.0)) == {"test"} and set(hash_split(ids, 1.0)) == {"calib"}
    with pytest.raises(ValueError, match="data.calib_share"):
        hash_split(ids, 1.5)


def test_an_image_folder_gets_path_ids_and_splits_that_survive_new_images(tmp_path):
    names = [f"{c}/{i}.png" for c in ("coat", "bag") for i in range(40)]
    before = read_dataset(images(tmp_path / "data", names))
    assert sorted(before["id"].to_pylist()) == sorted(names)
    assert set(before["split"].to_pylist()) == {"calib", "test"}
    images(tmp_path / "data", ["bag/new-1.png", "coat/new-2.png", "shoe/0.png"])  # a new class, too
    after = read_dataset(tmp_path / "data")
    old = dict(zip(before["id"].to_pylist(), before["split"].to_pylist()))
    new = dict(zip(after["id"].to_pylist(), after["split"].to_pylist()))
    assert {i: new[i] for i in old} == old and after.num_rows == 83


def test_a_manifest_keeps_its_splits_and_fills_the_missing_ones(tmp_path):
    images(tmp_path, ["a/0.png", "b/1.png", "a/2.png"])
    pq.write_table(pa.table({"id": ["x", "y", "z"], "path": ["a/0.png", "b/1.png", "a/2.png"], "label": ["a", "b", "a"],
                             "split": ["train", None, ""]}), tmp_path / "m.parquet")
    table = read_dataset(tmp_path / "m.parquet", calib_share=0.5)
    assert table["split"].to_pylist() == ["train"] + hash_split(["y", "z"], 0.5)
    pq.write_table(pa.table({"path": ["a/0.png", "b/1.png"], "label": ["a", "b"]}), tmp_path / "n.parquet")
    table = read_dataset(tmp_path / "n.parquet", calib_share=1.0)  # no id: the row number
    assert table["id"].to_pylist() == ["00000000", "00000001"] and table["split"].to_pylist() == ["calib"] * 2


def test_the_class_order_is_the_one_the_manifest_states(tmp_path):
    images(tmp_path, ["0.png", "1.png", "2.png"])
    rows = {"path": ["0.png", "1.png", "2.png"], "label": ["star", "circle", "star"]}
    pq.write_table(pa.table(rows | {"label_index": [0, 1, 0]}), tmp_path / "indexed.parquet")
    table = read_dataset(tmp_path / "indexed.parquet")  # a ConceptWorld manifest: star is class 0, not sorted
    assert json.loads(table.schema.metadata[b"conceptlens.classes"]) == ["star", "circle"]
    assert table["label_index"].to_pylist() == [0, 1, 0]
    assert json.loads(read_dataset(tmp_path / "indexed.parquet", classes=["circle", "star"]).schema.metadata[
        b"conceptlens.classes"]) == ["circle", "star"]  # data.classes wins
    pq.write_table(pa.table(rows | {"label_index": [0, 1, 1]}), tmp_path / "inconsistent.parquet")
    assert json.loads(read_dataset(tmp_path / "inconsistent.parquet").schema.metadata[b"conceptlens.classes"]) == [
        "circle", "star"]  # two indices for star: no order stated, sorted


def test_an_embeddings_table_states_its_class_order_by_its_labels():
    from conceptlens.pipeline.datasets import stated_classes

    assert stated_classes(pa.table({"label": ["star", "circle", "star"], "label_index": [0, 2, 0]})) is None  # a gap
    assert stated_classes(pa.table({"label": ["star", "circle"], "label_index": [1, 0]})) == ["circle", "star"]


def test_embed_passes_a_users_columns_on_but_nothing_but_data_from_the_runs_world(tmp_path):
    """A user's manifest keeps its extra columns (documented); this run's ConceptWorld gives its data columns only,
    even from a run folder written before the truth had its own file (truth columns in its manifest)."""
    from conceptlens.config import load_config
    from conceptlens.jobs.embed import load_input

    images(tmp_path, ["0.png", "1.png"])
    rows = {"id": ["a", "b"], "path": [str(tmp_path / "0.png"), str(tmp_path / "1.png")], "split": ["test"] * 2,
            "label": ["star", "circle"], "label_index": [1, 0]}
    pq.write_table(pa.table(rows | {"photographer": ["ann", "bo"]}), tmp_path / "user.parquet")
    user = load_input(load_config(overrides=[f"data.source={tmp_path / 'user.parquet'}"]))
    assert user.column_names == ["id", "path", "split", "label", "label_index", "photographer"]
    world = tmp_path / "runs" / "old" / "world"
    world.mkdir(parents=True)
    old = rows | {"scenario": [None, "dark_circle"], "lighting_dark": [False, True]}  # an old run folder: truth in its manifest
    pq.write_table(pa.table(old), world / "manifest.parquet")
    table = load_input(load_config(overrides=[f"run.root={tmp_path / 'runs'}", "run.name=old"]))
    assert table.column_names == ["id", "path", "split", "label", "label_index"]
    assert json.loads(table.schema.metadata[b"conceptlens.classes"]) == ["circle", "star"]  # as label_index says
