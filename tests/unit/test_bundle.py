"""The filter bundle carries its models: files copied in, named by relative paths, found again wherever the
folder goes; tags stay tags."""
import json
import shutil

import numpy as np
import pytest

from conceptlens.models.embedding import ModelSpec
from conceptlens.models.vlm import CONFIG_DIR
from conceptlens.runtime.bundle import bundle_models, save_bundle
from conceptlens.runtime.filter import ConceptFilter
from test_runtime_filter import make_filter, world


@pytest.fixture(scope="module")
def fitted() -> ConceptFilter:
    return make_filter().fit(world(600, 0), world(200, 1, adversarial=True))


def test_a_bundle_carries_its_model_files_and_travels(tmp_path, fitted):
    (tmp_path / "cache").mkdir()
    classifier, vlm = tmp_path / "cache" / "classifier-1.pt", tmp_path / "cache" / "vlm-2.pt"
    classifier.write_bytes(b"classifier weights")
    vlm.write_bytes(b"vlm weights")
    spec = ModelSpec("resnet18", str(classifier), "fc", 3, "conceptworld-tiny", str(vlm))
    folder = save_bundle(fitted, tmp_path / "run" / "bundle", spec, image_size=48, run="r")
    text = (folder / "filter.json").read_text()
    assert str(tmp_path) not in text  # nothing names the machine it was made on
    meta = json.loads(text)["metadata"]
    assert meta["classifier"]["checkpoint"] == "models/classifier.pt" and meta["vlm"]["pretrained"] == "models/vlm.pt"
    assert meta["vlm"]["model_config"] == "models/conceptworld-tiny.json"
    assert json.loads(text)["class_names"] == ["a", "b", "c"]

    moved = shutil.move(folder, tmp_path / "elsewhere")
    shutil.rmtree(tmp_path / "cache")
    shutil.rmtree(tmp_path / "run")
    found, size = bundle_models(moved)
    assert size == 48 and found.classifier_arch == "resnet18" and found.num_classes == 3
    assert open(found.classifier_checkpoint, "rb").read() == b"classifier weights"
    assert open(found.vlm_pretrained, "rb").read() == b"vlm weights"
    assert open(found.vlm_model_config).read() == (CONFIG_DIR / "conceptworld-tiny.json").read_text()
    assert found.fingerprint()["classifier"] == meta["classifier"]["hash"]
    batch = world(50, 7)
    assert np.allclose(ConceptFilter.load(moved).score_all(batch)["misclassified"],
                       fitted.score_all(batch)["misclassified"])


def test_weights_given_as_tags_stay_tags(tmp_path, fitted):
    spec = ModelSpec("resnet18", None, "fc", 3, "ViT-B-32", "openai", classifier_weights="IMAGENET1K_V1")
    folder = save_bundle(fitted, tmp_path / "bundle", spec, image_size=224, run="r")
    assert not (folder / "models").exists()
    found, _ = bundle_models(folder)
    assert (found.classifier_checkpoint, found.classifier_weights) == (None, "IMAGENET1K_V1")
    assert (found.vlm_arch, found.vlm_pretrained, found.vlm_model_config) == ("ViT-B-32", "openai", None)


def test_a_bundle_missing_a_model_file_is_a_clear_error(tmp_path, fitted):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"w")
    folder = save_bundle(fitted, tmp_path / "bundle", ModelSpec("resnet18", str(weights), "fc", 3, "ViT-B-32", None),
                         image_size=48, run="r")
    (folder / "models" / "classifier.pt").unlink()
    with pytest.raises(FileNotFoundError, match="models/classifier.pt.*re-run `conceptlens monitor`"):
        bundle_models(folder)
