"""Failure features computed from the images themselves (METHODS.md §3), one batch at a time.

* ``backbone``: transfer learning, a model not trained on the task. ``vlm``: the VLM's vision tower before
  the layer that projects it onto the text embeddings (the tower's own pooled representation); or a
  torchvision architecture with pretrained weights (a tag in the torch hub cache, or a state dict file),
  without its final Linear layer, fed images resized and normalised as the weights expect.
* ``autoencoder``: the bottleneck of a convolutional autoencoder trained on the images alone
  (:mod:`conceptlens.recipes.train_autoencoder`): what the images look like, with no model in the loop.
* ``relevance``: HUDD's heatmaps, the LRP relevance of the classifier's predicted class at one of its modules
  (zennit's EpsilonPlusFlat rules, ResNets canonized), flattened: what the model under test looked at.

:class:`ImageFeatures` is a batch function for :func:`conceptlens.pipeline.raydata.map_images` (build it
through ``functools.partial(ImageFeatures, name, spec, ...)`` so every actor loads its models once).
"""
from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from open_clip.modified_resnet import ModifiedResNet
from open_clip.timm_model import TimmModel
from open_clip.transformer import VisionTransformer
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import EpsilonPlusFlat
from zennit.torchvision import ResNetCanonizer

from conceptlens.models import VLM, Classifier, ModelSpec, resolve_device, split_model
from conceptlens.models.classifier import load_state
from conceptlens.models.preprocess import PRESETS, Standardize
from conceptlens.recipes.train_autoencoder import load_autoencoder

IMAGE_EXTRACTORS = ("backbone", "autoencoder", "relevance")
FEATURES = "rootcause_features"  # the column each batch gets
STATE_DICT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
TORCHVISION_SIDE = 224  # the side a torchvision backbone sees when its weights (a file) do not say


def _resized(x: torch.Tensor, side: int) -> torch.Tensor:
    """``x`` ``(N, 3, H, W)`` resized to ``side`` × ``side`` (bilinear, antialiased), unchanged when it already is."""
    if x.shape[-2:] == (side, side):
        return x
    return F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)


def _pooled(features: torch.Tensor) -> torch.Tensor:
    """``(N, D)`` from a feature map ``(N, D, h, w)`` or tokens ``(N, L, D)`` (their mean), else unchanged."""
    if features.ndim == 4:
        return features.mean((2, 3))
    return features.mean(1) if features.ndim == 3 else features


def without_projection(visual: nn.Module) -> nn.Module:
    """An open_clip vision tower changed in place to return what it had before its projection into the joint
    space: the trunk's output of a timm tower, the pre-``proj`` pooled token of a ViT, the feature map that a
    ModifiedResNet's attention pool would have pooled (then averaged by the caller)."""
    if isinstance(visual, TimmModel):
        visual.head = nn.Identity()  # holds the projection (and attention pooling, if any)
    elif isinstance(visual, ModifiedResNet):
        visual.attnpool = nn.Identity()  # its output projection is fused into the attention
    elif isinstance(visual, VisionTransformer):
        visual.proj = None  # forward skips a missing projection
    else:
        raise ValueError(f"no pre-projection features for an open_clip vision tower of type {type(visual).__name__}; "
                         f"use rootcause.backbone=<torchvision architecture> instead")
    return visual


class VLMBackbone(nn.Module):
    """Pooled pre-projection features ``(N, D)`` of the VLM's vision tower, e.g. D = 512 for the tiny CLIP."""

    def __init__(self, vlm: VLM):
        super().__init__()
        self.vlm = vlm
        without_projection(vlm.model.visual)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _pooled(self.vlm.model.visual(self.vlm.normalize(x)))


def _final_linear(model: nn.Module) -> str:
    """The name of ``model``'s last ``nn.Linear`` (its classifier layer)."""
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ValueError(f"{type(model).__name__} has no nn.Linear classifier layer to take the features before")
    return names[-1]


def _hub_weights(arch: str, tag: str):
    """The torchvision weights enum for ``tag``; they must already lie in torch hub's cache (nothing is downloaded)."""
    enum = torchvision.models.get_model_weights(arch)
    if tag not in enum.__members__:
        raise ValueError(f"rootcause.backbone_weights={tag!r} is neither a state dict file nor a weights tag of "
                         f"{arch}; tags: {list(enum.__members__)}")
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(enum[tag].url).path)
    if not cached.is_file():
        raise RuntimeError(f"rootcause.backbone_weights={tag} for {arch} are not in the torch hub cache ({cached}) "
                           f"and are never downloaded here; put the file there or pass "
                           f"rootcause.backbone_weights=/path/to/state_dict.pt")
    return enum[tag]


def _load_file(model: nn.Module, path: str, head: str) -> None:
    """Load a whole model's state dict (raw or under ``state_dict``/``model``) into ``model``, except its head."""
    state = load_state(path, "rootcause.backbone_weights file")
    state = {k: v for k, v in state.items() if not k.startswith(head + ".")}  # any number of classes
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(head + ".")]
    if missing or result.unexpected_keys:
        raise ValueError(f"rootcause.backbone_weights file {path} does not fit {type(model).__name__}: "
                         f"missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}")


class TorchvisionBackbone(nn.Module):
    """Penultimate features ``(N, D)`` of a pretrained torchvision model (the input of its last Linear layer,
    e.g. D = 512 for resnet18), images resized to the side and normalised with the mean and std of its weights.

    ``weights``: a torchvision weights tag (e.g. ``IMAGENET1K_V1``) in the torch hub cache, or a state dict file
    of the whole model (ImageNet normalisation, 224 px).
    """

    def __init__(self, arch: str, weights: str | None):
        super().__init__()
        if arch not in torchvision.models.list_models(torchvision.models):
            raise ValueError(f"rootcause.backbone={arch!r} is neither 'vlm' nor a torchvision classification model "
                             f"(e.g. resnet18, resnet50, mobilenet_v3_small)")
        if not weights:
            raise ValueError(f"rootcause.backbone={arch} needs rootcause.backbone_weights (a torchvision weights tag "
                             f"such as IMAGENET1K_V1, or a state dict file): a random network transfers nothing")
        if Path(weights).is_file() or Path(weights).suffix in STATE_DICT_SUFFIXES:
            model = torchvision.models.get_model(arch, weights=None)
            _load_file(model, weights, _final_linear(model))
            self.side, (mean, std) = TORCHVISION_SIDE, PRESETS["imagenet"]
        else:
            tv_weights = _hub_weights(arch, weights)
            model = torchvision.models.get_model(arch, weights=tv_weights)
            preprocess = tv_weights.transforms()
            self.side, mean, std = preprocess.crop_size[0], preprocess.mean, preprocess.std
        encoder, _ = split_model(model, _final_linear(model))
        self.model = Classifier(encoder, nn.Identity(), Standardize(mean, std)).eval()

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(_resized(x, self.side))


class AutoencoderCode(nn.Module):
    """The bottleneck ``(N, bottleneck)`` of the autoencoder checkpoint at ``path``, images resized to its side."""

    def __init__(self, path: str | os.PathLike):
        super().__init__()
        self.autoencoder = load_autoencoder(path)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.encode(_resized(x, self.autoencoder.image_size))


def find_layer(classifier: Classifier, name: str) -> nn.Module:
    """The module ``name`` of ``classifier``, relative to its encoder (``layer4``) or in full (``encoder.layer4``)."""
    modules = dict(classifier.named_modules())
    for candidate in (f"encoder.{name}", name):
        if name and candidate in modules:
            return modules[candidate]
    children = [n for n, _ in classifier.encoder.named_children()]
    raise ValueError(f"rootcause.relevance_layer={name!r} is not a module of the classifier; its encoder's modules "
                     f"include {children[-6:]} (dotted names reach nested ones, e.g. {children[-1]}.0)")


class LayerRelevance:
    """LRP relevance ``(N, C·h·w)`` of each image's predicted class at the output of one classifier module.

    The predicted class gets relevance 1 (one-hot) and zennit's rules carry it down to the layer only. Each rule
    hands back, as the gradient of its module's input, that input's relevance (its reducer has already multiplied
    by the input), so the modified gradient reaching the layer's output is the relevance itself, not a factor of
    it: it sums to 1 less what bias terms absorbed on the way.
    """

    def __init__(self, classifier: Classifier, layer: str):
        self.classifier, self.layer = classifier, find_layer(classifier, layer)
        resnet = any(isinstance(m, (BasicBlock, Bottleneck)) for m in classifier.modules())
        # canonizers make batch norms and residual sums explicit, so that the rules see every linear step
        self.composite = EpsilonPlusFlat(canonizers=[ResNetCanonizer() if resnet else SequentialMergeBatchNorm()])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        kept: list[torch.Tensor] = []
        handle = self.layer.register_forward_hook(lambda module, inputs, output: kept.append(output))
        x = x.detach().requires_grad_(True)  # zennit only hooks layers whose input needs a gradient
        try:
            with torch.enable_grad(), self.composite.context(self.classifier) as model:
                logits = model(x)
                target = F.one_hot(logits.argmax(1), logits.shape[1]).to(logits.dtype)
                (relevance,) = torch.autograd.grad(logits, kept[-1], grad_outputs=target)
        finally:
            handle.remove()
        return relevance.flatten(1)


class ImageFeatures:
    """One image extractor as a batch function: ``__call__(batch)`` drops ``image`` (``uint8 (N, H, W, 3)``) and
    adds ``rootcause_features`` ``float32 (N, D)``; other columns pass through.

    ``name``: one of :data:`IMAGE_EXTRACTORS`. ``spec``: the models (the VLM for ``backbone="vlm"``, the
    classifier for ``relevance``). ``backbone``/``backbone_weights``, ``relevance_layer``: as in
    ``RootcauseConfig``; ``autoencoder``: the checkpoint path (see
    :func:`conceptlens.recipes.train_autoencoder.ensure_autoencoder`).
    """

    def __init__(self, name: str, spec: ModelSpec, *, backbone: str = "vlm", backbone_weights: str | None = None,
                 relevance_layer: str = "layer4", autoencoder: str | None = None, device: str = "auto"):
        if name not in IMAGE_EXTRACTORS:
            raise ValueError(f"image extractor {name!r} is not one of {IMAGE_EXTRACTORS}")
        self.name, self.device = name, resolve_device(device)
        if name == "backbone":
            model = VLMBackbone(spec.vlm()) if backbone == "vlm" else TorchvisionBackbone(backbone, backbone_weights)
            self.extract = model.to(self.device).eval()
        elif name == "autoencoder":
            if not autoencoder:
                raise ValueError("the autoencoder extractor needs a checkpoint (autoencoder=PATH)")
            self.extract = AutoencoderCode(autoencoder).to(self.device).eval()
        else:
            self.extract = LayerRelevance(spec.classifier().to(self.device).eval(), relevance_layer)

    def features(self, images: np.ndarray) -> np.ndarray:
        """``images``: ``uint8 (N, H, W, 3)`` -> ``float32 (N, D)``."""
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device).permute(0, 3, 1, 2).float().div_(255)
        return self.extract(x).float().cpu().numpy()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {k: v for k, v in batch.items() if k != "image"}
        out[FEATURES] = self.features(batch["image"])
        return out


class ImageFeatureSet:
    """Several image extractors in one pass over the images (one decode, one actor pool, each model loaded once
    per actor): ``__call__(batch)`` drops ``image`` and adds a ``rootcause_<name>`` column per extractor.
    Keyword settings as :class:`ImageFeatures`."""

    def __init__(self, names: list[str], spec: ModelSpec, **settings):
        self.extractors = {name: ImageFeatures(name, spec, **settings) for name in names}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {k: v for k, v in batch.items() if k != "image"}
        for name, extractor in self.extractors.items():
            out[f"rootcause_{name}"] = extractor.features(batch["image"])
        return out
