import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conceptlens.pipeline.datasets import read_dataset
from conceptlens.models.embedding import decode_batch, decode_image
from conceptlens.pipeline.shards import ShardPlan, batch_to_table, write_atomic


@pytest.fixture
def folder(tmp_path):
    for label, color in [("cat", (200, 0, 0)), ("dog", (0, 0, 200))]:
        (tmp_path / "imgs" / label).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (40, 30), color).save(tmp_path / "imgs" / label / f"{i}.png")
    return tmp_path / "imgs"


def test_image_folder_becomes_a_manifest(folder):
    table = read_dataset(folder)
    assert table.column_names[:5] == ["id", "path", "split", "label", "label_index"]
    assert table.num_rows == 6 and set(table.column("label").to_pylist()) == {"cat", "dog"}
    assert table.column("label_index").to_pylist() == [0, 0, 0, 1, 1, 1]


def test_csv_manifest_resolves_relative_paths_and_passes_columns_through(folder, tmp_path):
    (tmp_path / "m.csv").write_text("path,label,weather\nimgs/cat/0.png,cat,fog\nimgs/dog/1.png,dog,rain\n")
    table = read_dataset(tmp_path / "m.csv", classes=["dog", "cat"])
    assert table.column("label_index").to_pylist() == [1, 0]
    assert table.column("weather").to_pylist() == ["fog", "rain"]
    assert table.column("path")[0].as_py() == str(folder / "cat" / "0.png")


def test_bad_sources_are_explained(tmp_path, folder):
    with pytest.raises(FileNotFoundError):
        read_dataset(tmp_path / "nope.parquet")
    pq.write_table(pa.table({"file": ["a.png"]}), tmp_path / "m.parquet")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['label', 'path'\]"):
        read_dataset(tmp_path / "m.parquet")
    with pytest.raises(ValueError, match="not among the classifier's classes"):
        read_dataset(folder, classes=["cat"])


def test_decode_resizes_and_reports_failures(folder, tmp_path):
    image, error = decode_image(str(folder / "cat" / "0.png"), 64)
    assert image.shape == (64, 64, 3) and error is None and image[..., 0].mean() > 150
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    batch = decode_batch({"path": np.array([str(tmp_path / "broken.png"), str(tmp_path / "gone.png")])}, 32)
    assert batch["image"].shape == (2, 32, 32, 3)
    assert all(batch["error"]) and "gone.png" in batch["error"][1]


def test_shards_are_deterministic_and_refuse_other_inputs(tmp_path):
    ids = [str(i) for i in range(10)]
    plan = ShardPlan(tmp_path / "s", ids, 4)
    assert plan.count == 3 and plan.rows(2) == (8, 10) and plan.pending() == [0, 1, 2]
    write_atomic(batch_to_table({"id": np.array(ids[:4], dtype=object), "v": np.ones((4, 3))}), plan.path(0))
    assert ShardPlan(tmp_path / "s", ids, 4).pending() == [1, 2]
    with pytest.raises(ValueError, match="different input"):
        ShardPlan(tmp_path / "s", ids[:9], 4)
    table = pq.read_table(plan.path(0))
    assert table.schema.field("v").type == pa.list_(pa.float32(), 3)


def test_batches_keep_the_input_types_when_a_column_is_all_null():
    schema = pa.schema([("scenario", pa.string())])
    for values in (np.array([None, None], dtype=object), np.array([np.nan, np.nan], dtype=np.float32)):
        table = batch_to_table({"scenario": values}, schema)
        assert table.schema.field("scenario").type == pa.string() and table.column(0).null_count == 2


def test_a_model_fingerprint_follows_the_weights_not_the_path(tmp_path):
    import shutil

    import torch

    from conceptlens.models import ModelSpec, build_classifier, save_classifier

    torch.manual_seed(0)
    save_classifier(build_classifier("resnet18", num_classes=3), tmp_path / "a.pt")
    shutil.copy(tmp_path / "a.pt", tmp_path / "copy.pt")
    torch.manual_seed(1)
    save_classifier(build_classifier("resnet18", num_classes=3), tmp_path / "b.pt")

    def spec(checkpoint, vlm="openai"):
        return ModelSpec("resnet18", str(checkpoint), "fc", 3, "ViT-B-32", vlm)

    a, copy, b = spec(tmp_path / "a.pt"), spec(tmp_path / "copy.pt"), spec(tmp_path / "b.pt")
    assert a.fingerprint() == copy.fingerprint()  # the same weights elsewhere: the same model
    assert a.fingerprint()["classifier"] != b.fingerprint()["classifier"]
    assert a.fingerprint()["vlm"] == b.fingerprint()["vlm"]
    assert spec(tmp_path / "a.pt", "laion2b_s34b_b79k").fingerprint()["vlm"] != a.fingerprint()["vlm"]
