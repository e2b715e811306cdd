"""The image extractors of `conceptlens rootcause` (backbone, autoencoder, relevance) and the autoencoder recipe,
on untrained tiny models and synthetic images."""
import functools
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from open_clip.modified_resnet import ModifiedResNet
from open_clip.transformer import VisionTransformer
from PIL import Image

from conceptlens.config import AutoencoderConfig, TrainConfig, load_config
from conceptlens.models import ModelSpec, build_vlm
from conceptlens.recipes.train_autoencoder import (ConvAutoencoder, ensure_autoencoder, save_autoencoder,
                                                   train_autoencoder)
from conceptlens.rootcause.images import FEATURES, ImageFeatures, find_layer, without_projection

SPEC = ModelSpec("resnet18", None, "fc", 10, "conceptworld-tiny", None)  # untrained classifier and tiny CLIP


def shapes(n: int, side: int = 48, seed: int = 0) -> np.ndarray:
    """``uint8 (n, side, side, 3)``: a bright rectangle on a dark background per image, colours at random."""
    rng = np.random.default_rng(seed)
    images = np.empty((n, side, side, 3), np.uint8)
    for image in images:
        image[:] = rng.integers(0, 96, 3)
        (y0, y1), (x0, x1) = np.sort(rng.integers(0, side, (2, 2)), axis=1)
        image[y0:y1 + 4, x0:x1 + 4] = rng.integers(160, 256, 3)
    return images


def batch(n: int = 3, side: int = 48) -> dict:
    return {"id": np.arange(n), "image": shapes(n, side)}


def as_float(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255


def check_features(out: dict, n: int, dim: int) -> np.ndarray:
    assert "image" not in out and list(out["id"]) == list(range(n))
    features = out[FEATURES]
    assert features.shape == (n, dim) and features.dtype == np.float32 and np.isfinite(features).all()
    return features


def test_vlm_backbone_is_the_pooled_feature_before_the_projection():
    torch.manual_seed(0)
    vlm = build_vlm("conceptworld-tiny")
    torch.manual_seed(0)  # the extractor builds the same weights
    extractor = ImageFeatures("backbone", SPEC, device="cpu")
    data = batch()
    features = check_features(extractor(dict(data)), 3, vlm.model.visual.trunk.num_features)
    with torch.no_grad():
        projected = F.normalize(vlm.model.visual.head(torch.from_numpy(features)), dim=-1)
        assert torch.allclose(projected, vlm.encode_images(as_float(data["image"])), atol=1e-5)


@pytest.mark.parametrize("tower, width", [
    (lambda: VisionTransformer(image_size=32, patch_size=8, width=64, layers=1, heads=2, mlp_ratio=2.0,
                               output_dim=16), 64),
    (lambda: ModifiedResNet(layers=(1, 1, 1, 1), output_dim=16, heads=2, image_size=32, width=8), 8 * 32),
])
def test_other_open_clip_towers_lose_their_projection(tower, width):
    torch.manual_seed(0)
    visual = tower().eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        embedding = visual(x)
        proj = visual.proj if isinstance(visual, VisionTransformer) else None
        features = without_projection(visual)(x)
    pooled = features.mean((2, 3)) if features.ndim == 4 else features
    assert embedding.shape == (2, 16) and pooled.shape == (2, width)
    if proj is not None:
        assert torch.allclose(pooled @ proj, embedding, atol=1e-5)


def test_relevance_is_lrp_of_the_predicted_class_at_the_layer():
    torch.manual_seed(0)
    extractor = ImageFeatures("relevance", SPEC, relevance_layer="layer4", device="cpu")
    clf = extractor.extract.classifier
    data = batch(4)
    with torch.no_grad():  # the extractor turns gradients on itself
        relevance = check_features(extractor(dict(data)), 4, 512 * 2 * 2)  # layer4 of resnet18 at 48 px: 512×2×2
        outputs = []
        handle = clf.encoder.layer4.register_forward_hook(lambda module, inputs, output: outputs.append(output))
        logits = clf(as_float(data["image"]))
        handle.remove()
    assert outputs[0][0].numel() == relevance.shape[1]
    assert np.abs(relevance[0] - relevance[1]).max() > 1e-3
    # conservation: the layer holds the predicted logit's relevance minus what the head's bias absorbed
    top, pred = logits.max(1)
    assert np.allclose(relevance.sum(1), ((top - clf.head.bias[pred]) / top).detach().numpy(), rtol=1e-3)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in clf.modules())  # everything removed
    torch.manual_seed(0)
    full_name = ImageFeatures("relevance", SPEC, relevance_layer="encoder.layer4", device="cpu")
    assert np.allclose(full_name(dict(data))[FEATURES], relevance, atol=1e-6)


def test_relevance_flows_through_a_pretrained_efficientnet():
    """LRP through EfficientNet-Lite0's MBConv blocks (depthwise convolutions, squeeze-and-excitation, batch norms
    merged by the canonizer) to its last block, the layer `conf/experiments/efficientnet.yaml` names."""
    spec = ModelSpec("efficientnet_lite0", None, "_fc", 10, "conceptworld-tiny", None, classifier_weights="IMAGENET1K",
                     classifier_preprocess="half")
    from conceptlens.world import CLASSES, GROUPS, render

    rng = np.random.default_rng(0)  # ConceptWorld scenes (flat synthetic rectangles saturate its ReLU6: no relevance)
    images = np.stack([render(label, {g: group.values[i % len(group.values)] for g, group in GROUPS.items()}, rng,
                              size=48) for i, label in enumerate(CLASSES[:4])])
    torch.manual_seed(0)
    extractor = ImageFeatures("relevance", spec, relevance_layer="_blocks.15", device="cpu")
    with torch.no_grad():  # 320 channels at 1×1 for 48 px (stride 32)
        relevance = check_features(extractor({"id": np.arange(4), "image": images}), 4, 320)
    assert np.isfinite(relevance).all() and np.abs(relevance).sum(1).min() > 0
    assert np.abs(relevance[0] - relevance[1]).max() > 1e-4
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in extractor.extract.classifier.modules())


def test_a_nested_layer_and_a_bad_layer_name():
    clf = SPEC.classifier()
    assert find_layer(clf, "layer3.1.conv2") is clf.encoder.layer3[1].conv2
    with pytest.raises(ValueError, match=r"relevance_layer='layer9' .*'layer4'"):
        ImageFeatures("relevance", SPEC, relevance_layer="layer9", device="cpu")


def test_torchvision_backbone_from_the_hub_cache_or_a_file(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="not in the torch hub cache .*backbone_weights=/path"):
        ImageFeatures("backbone", SPEC, backbone="resnet18", backbone_weights="IMAGENET1K_V1", device="cpu")
    assert time.monotonic() - start < 5  # nothing is downloaded, nothing waits for a network
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    torch.save(model.state_dict(), tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    cached = ImageFeatures("backbone", SPEC, backbone="resnet18", backbone_weights="IMAGENET1K_V1", device="cpu")
    data = batch(2)
    features = check_features(cached(dict(data)), 2, 512)
    model.fc = torch.nn.Identity()
    x = F.interpolate(as_float(data["image"]), size=(224, 224), mode="bilinear", antialias=True)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
    with torch.no_grad():
        assert np.allclose(features, model.eval()((x - mean) / std).numpy(), atol=1e-4)
    model.fc = torch.nn.Linear(512, 7)  # a file of another task: its head is not needed
    torch.save({"state_dict": model.state_dict()}, tmp_path / "other.pt")
    from_file = ImageFeatures("backbone", SPEC, backbone="resnet18", backbone_weights=str(tmp_path / "other.pt"),
                              device="cpu")
    assert np.allclose(from_file(dict(data))[FEATURES], features, atol=1e-4)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"backbone": "resnet18"}, ValueError, "needs rootcause.backbone_weights"),
    ({"backbone": "resnet18", "backbone_weights": "NOT_A_TAG"}, ValueError, "tags: .*IMAGENET1K_V1"),
    ({"backbone": "resnet18", "backbone_weights": "missing.pt"}, FileNotFoundError, "missing.pt does not exist"),
    ({"backbone": "resnet999", "backbone_weights": "IMAGENET1K_V1"}, ValueError, "neither 'vlm' nor a torchvision"),
])
def test_bad_backbones_are_explained(kwargs, error, match):
    with pytest.raises(error, match=match):
        ImageFeatures("backbone", SPEC, device="cpu", **kwargs)


def test_bad_extractor_arguments_are_explained():
    with pytest.raises(ValueError, match="not one of"):
        ImageFeatures("pixels", SPEC)
    with pytest.raises(ValueError, match="needs a checkpoint"):
        ImageFeatures("autoencoder", SPEC)
    with pytest.raises(ValueError, match="divisible by 8"):
        ConvAutoencoder(50, 8)


def test_autoencoder_trains_saves_and_reloads_as_an_extractor(tmp_path):
    images = torch.from_numpy(shapes(320))
    cfg = AutoencoderConfig(bottleneck=16, train=TrainConfig(epochs=1, batch_size=16, lr=5e-3))
    lines = []
    model, info = train_autoencoder(images, cfg, device="cpu", seed=0, log=lines.append)
    assert info["epochs"] == 1 and lines[-1].startswith("autoencoder: epoch 1/1, loss ")
    x = images.permute(0, 3, 1, 2).float() / 255
    torch.manual_seed(0)
    untrained = ConvAutoencoder(48, 16).eval()
    with torch.no_grad():
        assert F.mse_loss(model(x), x) < 0.8 * F.mse_loss(untrained(x), x)
    save_autoencoder(model, tmp_path / "ae.pt")
    extractor = functools.partial(ImageFeatures, "autoencoder", SPEC, autoencoder=str(tmp_path / "ae.pt"),
                                  device="cpu")
    data = batch(3)
    codes = check_features(pickle.loads(pickle.dumps(extractor))()(dict(data)), 3, 16)
    with torch.no_grad():
        assert np.allclose(codes, model.encode(as_float(data["image"])).numpy(), atol=1e-5)
    check_features(extractor()(batch(3, side=64)), 3, 16)  # other sides are resized to the autoencoder's


def test_autoencoder_training_stops_after_max_minutes():
    cfg = AutoencoderConfig(bottleneck=4, train=TrainConfig(epochs=3, batch_size=16, max_minutes=0))
    lines = []
    _, info = train_autoencoder(torch.rand(32, 3, 16, 16), cfg, device="cpu", log=lines.append)  # float NCHW
    assert info["epochs"] == 1 and "stopping after 1 epochs" in lines[-1]


def test_ensure_autoencoder_trains_once_then_reuses_the_cache(tmp_path):
    paths = []
    for i, image in enumerate(shapes(64)):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(image).save(paths[-1])
    cfg = load_config(overrides=[f"run.cache_dir={tmp_path / 'cache'}", "run.device=cpu",
                                 "rootcause.autoencoder.bottleneck=8", "rootcause.autoencoder.train.epochs=1",
                                 "rootcause.autoencoder.train.batch_size=32"])
    first, second = [], []
    path = ensure_autoencoder(cfg, paths, 48, log=first.append)
    assert path.name.startswith("autoencoder-") and path.with_suffix(".json").is_file()
    assert any("training" in line for line in first)
    copies = tmp_path / "elsewhere"  # the same images in another folder: the same model
    copies.mkdir()
    moved = [str(copies / Path(p).name) for p in paths]
    for src, dst in zip(paths, moved):
        Path(dst).write_bytes(Path(src).read_bytes())
    assert ensure_autoencoder(cfg, moved, 48, log=second.append) == path
    assert second == [f"autoencoder: reusing {path}"]
    assert ensure_autoencoder(cfg, paths[:-1], 48, log=lambda _: None) != path  # other images, other model
