import time

import pytest
import torch
import torch.nn.functional as F

from conceptlens.models import ConceptBank, build_classifier, build_vlm, save_classifier, save_vlm, split_model
from conceptlens.models import offline, vlm as vlm_module


@pytest.fixture
def images():
    torch.manual_seed(0)
    return torch.rand(2, 3, 64, 64)


@pytest.fixture
def no_network(monkeypatch):
    """The real offline code path, with the network probe sent to an address that never answers."""
    monkeypatch.setattr(offline, "PROBE_TIMEOUT_S", 1.0)
    monkeypatch.setattr(offline.socket, "create_connection",
                        lambda *a, timeout=None, **k: (_ for _ in ()).throw(OSError("unreachable")))


def test_resnet18_splits_into_pooled_features_and_head(images):
    clf = build_classifier("resnet18", num_classes=10)
    assert clf.features(images).shape == (2, 512)
    logits = clf(images)
    assert logits.shape == (2, 10)
    assert torch.allclose(logits, clf.head(clf.features(images)), atol=1e-5)


def test_other_architectures_and_factories(images):
    mobile = build_classifier("mobilenet_v3_small", num_classes=10, head="classifier")
    assert mobile(images).shape == (2, 10) and mobile.features(images).shape == (2, 576)
    factory = build_classifier("torchvision.models:resnet18", num_classes=3)
    assert factory(images).shape == (2, 3)


def test_bad_names_are_explained():
    with pytest.raises(ValueError, match="torchvision name"):
        build_classifier("resnet19", num_classes=10)
    with pytest.raises(ValueError, match="no module 'fcc'"):
        build_classifier("resnet18", num_classes=10, head="fcc")
    with pytest.raises(ValueError, match="cannot be imported"):
        build_classifier("nowhere:model", num_classes=10)


def test_checkpoints_round_trip_in_both_key_styles(tmp_path, images):
    clf = build_classifier("resnet18", num_classes=10)
    save_classifier(clf, tmp_path / "clf.pt")
    torch.save({"state_dict": _whole_model_state(clf)}, tmp_path / "tv.pt")
    for path in (tmp_path / "clf.pt", tmp_path / "tv.pt"):
        again = build_classifier("resnet18", num_classes=10, checkpoint=str(path))
        assert torch.allclose(again(images), clf(images), atol=1e-5)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_classifier("resnet18", num_classes=10, checkpoint=str(tmp_path / "missing.pt"))


def _whole_model_state(clf):
    """The state dict a plain torchvision resnet18 would have: encoder keys plus fc.*"""
    state = {k[len("encoder."):]: v for k, v in clf.state_dict().items() if k.startswith("encoder.")}
    return state | {f"fc.{k}": v for k, v in clf.head.state_dict().items()}


def test_split_model_keeps_the_original_intact():
    import torchvision
    model = torchvision.models.resnet18(num_classes=4)
    encoder, head = split_model(model, "fc")
    assert isinstance(encoder.fc, torch.nn.Identity) and head is model.fc


def test_torchvision_weights_offline_fail_fast(no_network, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    start = time.time()
    with pytest.raises(RuntimeError, match="classifier.checkpoint"):
        build_classifier("resnet18", num_classes=1000, weights="IMAGENET1K_V1")
    assert time.time() - start < 15


def test_tiny_clip_embeds_images_of_any_size_and_texts():
    vlm = build_vlm("conceptworld-tiny")
    with torch.no_grad():
        for shape in ((3, 3, 64, 64), (2, 3, 100, 80)):
            emb = vlm.encode_images(torch.rand(*shape))
            assert emb.shape == (shape[0], 128)
            assert torch.allclose(emb.norm(dim=-1), torch.ones(shape[0]), atol=1e-5)
        text = vlm.encode_texts(["a photo of a star", "a photo of a circle"])
    assert text.shape == (2, 128) and torch.allclose(text.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_vlm_checkpoint_round_trip_and_bad_arguments(tmp_path):
    vlm = build_vlm("conceptworld-tiny")
    save_vlm(vlm, tmp_path / "vlm.pt")
    again = build_vlm("conceptworld-tiny", pretrained=str(tmp_path / "vlm.pt"))
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(vlm.encode_images(x), again.encode_images(x), atol=1e-5)
    with pytest.raises(ValueError, match="pretrained tag"):
        build_vlm("ViT-B-32", pretrained="not-a-tag")
    with pytest.raises(FileNotFoundError):
        build_vlm("conceptworld-tiny", pretrained=str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="unknown open_clip architecture"):
        build_vlm("no-such-clip")


def test_custom_model_config_registers_an_architecture(tmp_path):
    config = tmp_path / "my-clip.json"
    config.write_text((vlm_module.CONFIG_DIR / "conceptworld-tiny.json").read_text())
    vlm = build_vlm("ignored", model_config=str(config))
    assert vlm.image_size == 64


def test_pretrained_tag_offline_fails_fast(no_network):
    start = time.time()
    with pytest.raises(RuntimeError, match="vlm.pretrained"):
        build_vlm("ViT-B-32", pretrained="openai")
    assert time.time() - start < 15


def test_concept_bank_is_the_normalised_mean_of_prompt_embeddings():
    vlm = build_vlm("conceptworld-tiny")
    bank = ConceptBank.from_templates(vlm, {"water": "on water", "fog": "in fog"},
                                      ["a photo of an object {}", "an object {}"])
    assert bank.names == ["water", "fog"] and bank.embeddings.shape == (2, 128)
    with torch.no_grad():
        prompts = vlm.encode_texts(["a photo of an object in fog", "an object in fog"])
    assert torch.allclose(bank.embeddings[1], F.normalize(prompts.mean(0), dim=-1), atol=1e-5)
    assert bank.scores(F.normalize(torch.rand(4, 128), dim=-1)).shape == (4, 2)
