"""Image classifiers as an (encoder, head) pair.

A classifier is a torchvision architecture (with optional weights or a checkpoint), a pretrained backbone
whose weights ship in a package (:mod:`conceptlens.models.backbones`: ``efficientnet_lite0``) or any
``module:function`` factory, split at a named module: the encoder is the model with that
module replaced by ``Identity`` (so it returns the features that fed the head), the head is
that module. Inputs are float images in [0, 1]; the preprocessing the model was trained with
(:mod:`conceptlens.models.preprocess`, ImageNet's mean/std unless stated) lives inside the model.
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

from conceptlens.models.backbones import BUNDLED, HEADS
from conceptlens.models.offline import reachable
from conceptlens.models.preprocess import DEFAULT, input_transform


class Classifier(nn.Module):
    """An image classifier split into encoder and head. Inputs: float images in [0, 1], ``(N, 3, H, W)``.

    ``preprocess``: a spec of :mod:`conceptlens.models.preprocess` or a module mapping [0, 1] pixels to the
    encoder's input. ``state_dict()`` holds ``encoder.*`` and ``head.*`` only (the preprocessing has no weights).
    """

    def __init__(self, encoder: nn.Module, head: nn.Module, preprocess: str | nn.Module = DEFAULT):
        super().__init__()
        self.encoder, self.head = encoder, head
        self.preprocess = preprocess if isinstance(preprocess, nn.Module) else input_transform(preprocess)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder features ``float32 (N, D)`` of preprocessed ``x``, e.g. D = 512 pooled features of resnet18."""
        return self.encoder(self.preprocess(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``float32 (N, num_classes)`` = ``head(features(x))``."""
        return self.head(self.features(x))


def split_model(model: nn.Module, head: str) -> tuple[nn.Module, nn.Module]:
    """``(encoder, head)``: a deep copy of ``model`` with module ``head`` (dotted name) replaced by
    ``Identity``, and that module itself. ``model`` is left intact."""
    modules = dict(model.named_modules())
    if not head or head not in modules:
        names = [n for n, _ in model.named_children()][-5:]
        raise ValueError(f"no module {head!r} to split the classifier at; its last top-level modules are {names} "
                         f"(use a dotted name such as 'heads.head' for nested ones)")
    encoder = copy.deepcopy(model)
    encoder.set_submodule(head, nn.Identity())
    return encoder, modules[head]


def _torchvision_weights(arch: str, tag: str):
    """The torchvision weights enum for ``tag``, failing at once when they are neither cached nor downloadable."""
    enum = torchvision.models.get_model_weights(arch)
    if tag not in enum.__members__:
        raise ValueError(f"classifier.weights={tag!r} is not a weights tag of {arch}; tags: {list(enum.__members__)}")
    weights = enum[tag]
    url = urlparse(weights.url)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url.path)
    if not cached.is_file() and not reachable(url.hostname, url.port or 443):
        raise RuntimeError(
            f"weights {tag} for {arch} are not cached at {cached} and the network is unreachable; "
            f"pass classifier.checkpoint=/path/to/state_dict.pt or put the file at {cached}")
    return weights


def _make(arch: str, num_classes: int, weights: str | None) -> nn.Module:
    if ":" in arch:
        module, _, function = arch.partition(":")
        try:
            factory = getattr(importlib.import_module(module), function)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"classifier factory {arch!r} cannot be imported: {err}") from None
        model = factory(num_classes=num_classes)
        if not isinstance(model, nn.Module):
            raise ValueError(f"classifier factory {arch!r} returned {type(model).__name__}, not an nn.Module")
        return model
    if arch in BUNDLED:
        return BUNDLED[arch](num_classes=num_classes, weights=weights)
    if arch not in torchvision.models.list_models(torchvision.models):
        raise ValueError(f"unknown classifier arch {arch!r}: use a torchvision classification model name "
                         f"(e.g. resnet18, resnet50, mobilenet_v3_small), a bundled pretrained one "
                         f"({', '.join(BUNDLED)}) or a 'module:function' factory")
    if weights is None:
        return torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
    return torchvision.models.get_model(arch, weights=_torchvision_weights(arch, weights))


def _with_outputs(head: nn.Module, num_classes: int) -> nn.Module:
    """``head`` with its last Linear layer replaced by a fresh one with ``num_classes`` outputs, if needed."""
    linears = [(name, m) for name, m in head.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"cannot give head {type(head).__name__} {num_classes} outputs: it has no nn.Linear")
    name, last = linears[-1]
    if last.out_features == num_classes:
        return head
    fresh = nn.Linear(last.in_features, num_classes)
    if not name:
        return fresh
    head.set_submodule(name, fresh)
    return head


def load_state(path: str | os.PathLike, what: str = "classifier checkpoint") -> dict[str, torch.Tensor]:
    """A state dict from a file: raw, or under ``state_dict`` / ``model`` (loaded with ``weights_only``)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state.get(key), dict):
            state = state[key]
    return state


def _as_classifier_state(state: dict[str, torch.Tensor], clf: Classifier, head: str) -> dict[str, torch.Tensor]:
    """Keys of a :class:`Classifier` (``encoder.*``, ``head.*``) from either those or a whole model's keys."""
    state = {k: v for k, v in state.items() if k not in ("mean", "std")}  # earlier versions saved these buffers
    if state.keys() == clf.state_dict().keys():
        return state
    prefix = head + "."
    return {("head." + k[len(prefix):] if k.startswith(prefix) else "encoder." + k): v for k, v in state.items()}


def build_classifier(arch: str, *, num_classes: int, head: str = "fc", weights: str | None = None,
                     checkpoint: str | os.PathLike | None = None, preprocess: str = DEFAULT) -> Classifier:
    """A :class:`Classifier` (in eval mode) from a torchvision name or ``"module:function"``, split at ``head``.

    ``weights``: a torchvision weights tag such as ``"IMAGENET1K_V1"``, loaded from torch hub's cache (or
    downloaded); without cache and network it fails at once. If ``num_classes`` differs from the weights'
    classes, the head's last Linear layer is replaced by a fresh one.
    ``checkpoint``: a state dict (raw, or under ``"state_dict"``/``"model"``) of the whole model or of a
    :class:`Classifier`; it is loaded last and strictly. A checkpoint that does not fit the model is a
    :class:`CheckpointMismatch` naming the first differing shapes and the setting that would fit.
    ``preprocess``: what the model does to [0, 1] pixels first (:mod:`conceptlens.models.preprocess`).
    """
    state = load_state(checkpoint) if checkpoint else None  # a missing file fails before any model is built
    if arch in HEADS and head != HEADS[arch]:
        raise ValueError(f"classifier.head={head!r}: {arch} splits at {HEADS[arch]!r}: set classifier.head={HEADS[arch]}")
    encoder, head_module = split_model(_make(arch, num_classes, weights), head)
    clf = Classifier(encoder, _with_outputs(head_module, num_classes) if weights else head_module, preprocess)
    if state is not None:
        state = _as_classifier_state(state, clf, head)
        mismatch = _mismatch(state, clf, checkpoint, arch, num_classes)
        if mismatch:
            raise CheckpointMismatch(mismatch)
        clf.load_state_dict(state)
    return clf.eval()


class CheckpointMismatch(ValueError):
    """A checkpoint whose keys or shapes do not fit the model built from the config."""


def _mismatch(state: dict[str, torch.Tensor], clf: Classifier, path, arch: str, num_classes: int) -> str | None:
    """One line saying why ``state`` does not fit ``clf`` (None when it fits): the class count when the head's
    output size differs, else the first differing shapes, else the first missing and unexpected keys."""
    own = clf.state_dict()
    shapes = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items()
              if k in own and tuple(v.shape) != tuple(own[k].shape)]
    outputs = [theirs[0] for k, theirs, ours in shapes if k.startswith("head.") and ours[:1] == (num_classes,)]
    if outputs:
        return (f"classifier.checkpoint {path} has {outputs[0]} classes, the config {num_classes} "
                f"(classifier.num_classes): set classifier.num_classes={outputs[0]} (and data.classes to match)")
    if shapes:
        listed = "; ".join(f"{k} {list(a)} in the checkpoint, {list(b)} in {arch}" for k, a, b in shapes[:3])
        return f"classifier.checkpoint {path} does not fit classifier.arch={arch}: {listed}"
    missing, unexpected = sorted(own.keys() - state.keys()), sorted(state.keys() - own.keys())
    if missing or unexpected:
        return (f"classifier.checkpoint {path} does not fit classifier.arch={arch} split at classifier.head: "
                f"missing {missing[:3]}{' …' if len(missing) > 3 else ''}, unexpected {unexpected[:3]}"
                f"{' …' if len(unexpected) > 3 else ''} ({len(missing)} missing, {len(unexpected)} unexpected)")
    return None


def save_classifier(clf: Classifier, path: str | os.PathLike) -> None:
    """Write ``clf.state_dict()`` (``encoder.*``, ``head.*``): ``build_classifier(..., checkpoint=path)`` reloads it."""
    torch.save(clf.state_dict(), path)
