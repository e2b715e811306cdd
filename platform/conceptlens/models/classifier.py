"""Image classifiers as an (encoder, head) pair.

A classifier is a torchvision architecture (with optional weights or a checkpoint) or any
``module:function`` factory, split at a named module: the encoder is the model with that
module replaced by ``Identity`` (so it returns the features that fed the head), the head is
that module. Inputs are float images in [0, 1]; normalisation lives inside the model.
"""
from __future__ import annotations

import copy
import importlib
import os
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

from conceptlens.models.offline import reachable

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class Classifier(nn.Module):
    """``forward``: float images ``(N, 3, H, W)`` in [0, 1] -> logits ``(N, K)``."""

    def __init__(self, encoder: nn.Module, head: nn.Module, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__()
        self.encoder, self.head = encoder, head
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder features ``float32 (N, D)``, e.g. D = 512 pooled features for resnet18."""
        return self.encoder((x - self.mean) / self.std).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def split_model(model: nn.Module, head: str) -> tuple[nn.Module, nn.Module]:
    """``(encoder, head)``: the model with module ``head`` (dotted name) replaced by Identity, and that module."""
    modules = dict(model.named_modules())
    if not head or head not in modules:
        candidates = [n for n, m in model.named_children()][-4:]
        raise ValueError(f"no module {head!r} to split at; the model's last children are {candidates}")
    encoder = copy.deepcopy(model)
    parent_name, _, child = head.rpartition(".")
    setattr(encoder.get_submodule(parent_name) if parent_name else encoder, child, nn.Identity())
    return encoder, modules[head]


def _torchvision_weights(arch: str, tag: str):
    weights = torchvision.models.get_model_weights(arch)[tag]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)
    if not cached.is_file() and not reachable(urlparse(weights.url).hostname):
        raise RuntimeError(
            f"torchvision weights {tag} for {arch} are not cached at {cached} and the network is unreachable; "
            f"pass classifier.checkpoint=/path/to/state_dict.pt, or put the weights file at {cached}")
    return weights


def _make(arch: str, num_classes: int, weights: str | None) -> nn.Module:
    if ":" in arch:
        module, _, function = arch.partition(":")
        try:
            factory = getattr(importlib.import_module(module), function)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"classifier factory {arch!r} cannot be imported: {err}") from None
        return factory(num_classes=num_classes)
    if arch not in torchvision.models.list_models():
        raise ValueError(f"unknown classifier arch {arch!r}: use a torchvision name "
                         f"(e.g. resnet18, resnet50, mobilenet_v3_small) or module:function")
    if weights is None:
        return torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
    return torchvision.models.get_model(arch, weights=_torchvision_weights(arch, weights))


def _load_state(path: str) -> dict:
    if not Path(path).is_file():
        raise FileNotFoundError(f"classifier checkpoint {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state.get(key), dict):
            state = state[key]
    return state


def build_classifier(arch: str, *, num_classes: int, head: str = "fc", weights: str | None = None,
                     checkpoint: str | None = None) -> Classifier:
    """A :class:`Classifier` from a torchvision name or ``module:function``, split at ``head``.

    ``weights``: a torchvision weights tag (from torch hub's cache; offline it fails at once).
    ``checkpoint``: a state dict (``weights_only`` load) of the whole model or of a Classifier.
    """
    model = _make(arch, num_classes, weights)
    state = _load_state(checkpoint) if checkpoint else None
    if state is not None and not any(k.startswith("encoder.") for k in state):
        model.load_state_dict(state)
        state = None
    encoder, head_module = split_model(model, head)
    if isinstance(head_module, nn.Linear) and head_module.out_features != num_classes:
        head_module = nn.Linear(head_module.in_features, num_classes)  # pretrained weights, new label set
    clf = Classifier(encoder, head_module)
    if state is not None:
        clf.load_state_dict(state)
    return clf.eval()


def save_classifier(clf: Classifier, path: str | os.PathLike) -> None:
    torch.save(clf.state_dict(), path)
