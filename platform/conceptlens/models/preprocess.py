"""What a model does to an image before its first layer: a preprocessing stated in one string.

Every image reaches the models as float pixels in [0, 1] (decoded and resized to ``data.image_size``); the
preprocessing maps them to what the model was trained on. A spec is one of:

- a preset: ``imagenet`` (torchvision's mean/std, the default of a classifier), ``clip`` (OpenAI CLIP's),
  ``half`` (``(x - 0.5) / 0.5``: values in [-1, 1]), ``none`` (the [0, 1] pixels as they are), ``byte``
  (values in [0, 255]);
- six numbers ``"m1,m2,m3,s1,s2,s3"``: ``(x - mean) / std`` per RGB channel on the [0, 1] pixels;
- ``module:function``: a function of a float tensor ``(N, 3, H, W)`` in [0, 1] returning the model's input.
"""
from __future__ import annotations

import importlib

import torch
from torch import nn

PRESETS = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "half": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    "byte": ((0.0, 0.0, 0.0), (1 / 255, 1 / 255, 1 / 255)),
}
DEFAULT = "imagenet"


class Standardize(nn.Module):
    """``(x - mean) / std`` per channel; mean and std are constants, not weights (not in the state dict)."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Call(nn.Module):
    """A user's preprocessing function as a module."""

    def __init__(self, function):
        super().__init__()
        self.function = function

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.function(x)


def mean_std(spec: str) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The ``(mean, std)`` a preset or six numbers stand for; None for a ``module:function``. A spec that is
    none of the three is a ``ValueError`` listing what is accepted."""
    spec = str(spec).strip()
    if spec in PRESETS:
        return PRESETS[spec]
    if ":" in spec:
        return None
    try:
        numbers = tuple(float(v) for v in spec.split(","))
    except ValueError:
        numbers = ()
    if len(numbers) != 6 or any(s <= 0 for s in numbers[3:]):
        raise ValueError(f"preprocess {spec!r} is not a preset ({', '.join(PRESETS)}), six numbers "
                         f"'m1,m2,m3,s1,s2,s3' (mean and positive std on [0, 1] pixels) or a 'module:function'")
    return numbers[:3], numbers[3:]


def input_transform(spec: str | None) -> nn.Module:
    """The module that maps [0, 1] pixels to the model's input under ``spec`` (None: :data:`DEFAULT`)."""
    spec = DEFAULT if spec is None else str(spec).strip()
    found = mean_std(spec)
    if found is not None:
        return Standardize(*found)
    module, _, function = spec.partition(":")
    try:
        return Call(getattr(importlib.import_module(module), function))
    except (ImportError, AttributeError) as err:
        raise ValueError(f"preprocess function {spec!r} cannot be imported: {err}") from None
