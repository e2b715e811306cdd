"""What `embed` used is recorded once, and the later commands take it from the run folder."""
import json

import pytest

from conceptlens.config import load_config
from conceptlens.models.embedding import ModelSpec
from conceptlens.pipeline.runs import EMBED_RECORD, record_inputs, run_inputs


@pytest.fixture
def recorded(tmp_path, monkeypatch):
    """A run 'mine' embedded from a user's folder, checkpoints and image size, as a user's config gives them."""
    monkeypatch.chdir(tmp_path)
    for name in ("clf.pt", "clip.pt"):
        (tmp_path / name).write_bytes(b"weights")
    (tmp_path / "images").mkdir()
    user = ["run.root=runs", "run.name=mine", "data.source=images", "data.image_size=28", "data.calib_share=0.3",
            "classifier.checkpoint=clf.pt", "classifier.num_classes=4", "vlm.arch=ViT-B-32", "vlm.pretrained=clip.pt"]
    cfg = load_config(overrides=user)
    spec = ModelSpec("resnet18", "clf.pt", "fc", 4, "ViT-B-32", "clip.pt")
    folder = tmp_path / "runs" / "mine" / "embed"
    folder.mkdir(parents=True)
    record_inputs(folder, cfg, spec, "images", ["bag", "coat", "shirt", "shoe"])
    return tmp_path, user


def test_later_commands_take_models_and_data_from_the_record(recorded):
    root, user = recorded
    record = json.loads((root / "runs" / "mine" / "embed" / EMBED_RECORD).read_text())
    assert record["inputs"]["classifier.checkpoint"] == str(root / "clf.pt")  # absolute: works from anywhere
    assert "0.3" in record["split_rule"]
    cfg = run_inputs(load_config(overrides=["run.root=runs", "run.name=mine", "attack.rows_per_split=5"]))
    assert cfg.classifier.checkpoint == str(root / "clf.pt") and cfg.vlm.pretrained == str(root / "clip.pt")
    assert (cfg.vlm.arch, cfg.classifier.num_classes, cfg.data.image_size) == ("ViT-B-32", 4, 28)
    assert cfg.data.calib_share == 0.3
    assert cfg.data.source == str(root / "images") and cfg.data.classes == ["bag", "coat", "shirt", "shoe"]
    assert cfg.attack.rows_per_split == 5  # everything else as given
    same = run_inputs(load_config(overrides=user))  # the user's whole config again (relative paths): no conflict
    assert same.classifier.checkpoint == str(root / "clf.pt")


def test_a_key_that_contradicts_the_record_is_refused(recorded):
    root, _ = recorded
    (root / "other.pt").write_bytes(b"other weights")
    for override in ("classifier.checkpoint=other.pt", "data.image_size=64"):
        key = override.split("=")[0]
        with pytest.raises(ValueError, match=rf"{key}=.*run 'mine' was embedded with .*leave {key} out"):
            run_inputs(load_config(overrides=["run.root=runs", "run.name=mine", override]))


def test_without_a_record_the_config_stands(tmp_path):
    cfg = load_config(overrides=[f"run.root={tmp_path}", "run.name=old", "classifier.checkpoint=x.pt"])
    assert run_inputs(cfg) is cfg
