"""CLIP-Illusion (NeuroInspect, METHODS.md §2): class-conditional visualisations of the classifier's neurons,
and plain activation maximisation as the baseline.

A neuron is a unit of the pooled encoder feature (``Classifier.features``). Both methods optimise images in
a Fourier parameterisation with colour decorrelation (Olah et al., "Feature Visualization", Distill 2017)
under random jitter, scale, rotation and noise. CLIP-Illusion maximises
``(cos(VLM(x), t_y) + eps) * (activation_n(x) + gamma * logit_y(x)) - ce_weight * CE(classifier(x), y)``,
so the image shows what the neuron responds to *within* class ``y``; the baseline maximises
``activation_n(x)`` alone.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from conceptlens.models import VLM, Classifier, ModelSpec, resolve_device

__all__ = ["FourierImage", "Visualiser", "activation", "activation_maps", "augment", "visualise"]

# The square root of the ImageNet colour correlation matrix (lucid's ``color_correlation_svd_sqrt``).
COLOR_CORRELATION_SQRT = torch.tensor([[0.26, 0.09, 0.02],
                                       [0.27, 0.00, -0.05],
                                       [0.27, -0.09, 0.03]])
SETTINGS = ("samples", "steps", "lr", "gamma", "eps", "ce_weight", "augmentations", "image_size")


class FourierImage(nn.Module):
    """``n`` RGB images of ``side`` × ``side`` pixels, parameterised by their spectrum.

    The parameter ``spectrum`` ``float32 (n, 3, side, side // 2 + 1, 2)`` holds the real and imaginary parts of
    ``torch.fft.rfft2`` coefficients, scaled by ``1 / frequency ** decay`` so that every frequency moves
    the pixels about equally (plain pixels let the optimiser pile up high-frequency noise). The pixels are
    decorrelated in colour and squashed into [0, 1] by a sigmoid. Initialised with ``N(0, std²)`` from
    ``generator`` (a CPU ``torch.Generator``), i.e. near-uniform grey images.
    """

    def __init__(self, n: int, side: int, *, generator: torch.Generator, decay: float = 1.0, std: float = 0.01):
        super().__init__()
        self.side = side
        fy = torch.fft.fftfreq(side)[:, None]
        fx = torch.fft.rfftfreq(side)[None, :]
        frequency = torch.sqrt(fx * fx + fy * fy).clamp_min(1.0 / side)  # the DC term gets the lowest frequency's scale
        self.register_buffer("scale", frequency.pow(-decay).float(), persistent=False)
        colour = COLOR_CORRELATION_SQRT / COLOR_CORRELATION_SQRT.norm(dim=0).max()
        self.register_buffer("colour", colour, persistent=False)
        shape = (n, 3, side, side // 2 + 1, 2)
        self.spectrum = nn.Parameter(torch.randn(shape, generator=generator, device=generator.device).float() * std)

    def forward(self) -> torch.Tensor:
        """The images ``float32 (n, 3, side, side)`` in [0, 1]."""
        spectrum = torch.view_as_complex(self.spectrum) * self.scale
        pixels = torch.fft.irfft2(spectrum, s=(self.side, self.side), norm="ortho") / 4.0  # lucid's "magic" 4
        return torch.sigmoid(torch.einsum("nchw,dc->ndhw", pixels, self.colour))


def augment(x: torch.Tensor, generator: torch.Generator, *, jitter: float = 1 / 16,
            scale: tuple[float, float] = (0.9, 1.1), degrees: float = 10.0, noise: float = 0.02) -> torch.Tensor:
    """A random, differentiable variant of each image of ``x`` ``float (N, 3, H, W)``, same shape and dtype.

    Each image is translated by up to ``jitter`` of its side (at least one pixel), scaled by a factor in
    ``scale`` and rotated by up to ``degrees``, in one ``grid_sample`` with reflected borders, then given
    Gaussian noise of std ``noise``. Every draw comes from ``generator``, so a seeded generator reproduces it.
    """
    n, _, h, w = x.shape

    def uniform(low: float, high: float) -> torch.Tensor:
        draw = torch.rand(n, generator=generator, device=generator.device)
        return (low + (high - low) * draw).to(device=x.device, dtype=x.dtype)

    shift = max(1.0, round(jitter * min(h, w)))
    tx, ty = uniform(-shift, shift) * 2 / w, uniform(-shift, shift) * 2 / h  # pixels -> grid units ([-1, 1])
    factor = uniform(*scale)
    angle = uniform(-degrees, degrees) * (math.pi / 180)
    cos, sin = torch.cos(angle) / factor, torch.sin(angle) / factor  # the grid maps output to input: 1/scale
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    moved = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    gaussian = torch.randn(x.shape, generator=generator, device=generator.device).to(device=x.device, dtype=x.dtype)
    return moved + noise * gaussian


def _as_index(neurons: Sequence[int] | torch.Tensor, n: int, device: torch.device) -> torch.Tensor:
    index = torch.as_tensor(neurons, dtype=torch.long, device=device).reshape(-1)
    if index.numel() != n:
        raise ValueError(f"need one neuron per image: {n} images, {index.numel()} neurons")
    return index


def activation(classifier: Classifier, x: torch.Tensor, neurons: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """``float32 (N,)``: the pooled feature ``classifier.features(x)[i, neurons[i]]`` of each image of
    ``x`` ``float (N, 3, H, W)`` in [0, 1]; differentiable."""
    features = classifier.features(x)
    return features.gather(1, _as_index(neurons, len(x), x.device)[:, None]).squeeze(1)


@contextmanager
def _pre_pooling_map(encoder: nn.Module) -> Iterator[dict]:
    """Inside: ``found["map"]`` is set, after a forward pass, to the last 4-D output with more than one
    position of any module of ``encoder`` that only pooled-sized outputs follow (``found["map"]`` is None
    when a larger output comes after it: the feature is no pooling of that map, as in a ViT)."""
    found: dict = {"map": None}

    def hook(module, inputs, output):
        if not isinstance(output, torch.Tensor) or output.ndim < 2:
            return
        if output.ndim == 4 and output.shape[2] * output.shape[3] > 1:
            found["map"] = output
        elif found["map"] is not None and output[0].numel() != found["map"].shape[1]:
            found["map"] = None

    handles = [m.register_forward_hook(hook) for m in encoder.modules()]
    try:
        yield found
    finally:
        for handle in handles:
            handle.remove()


def _normalise(maps: torch.Tensor) -> torch.Tensor:
    """Min-max each map of ``maps`` ``(N, H, W)`` into [0, 1]; a constant map becomes zeros."""
    flat = maps.flatten(1)
    low, high = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - low) / (high - low).clamp_min(1e-12)).view_as(maps)


def activation_maps(classifier: Classifier, x: torch.Tensor, neurons: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """Where each neuron fires: ``float32 (N, H, W)`` in [0, 1] for ``x`` ``float (N, 3, H, W)`` in [0, 1].

    For an encoder that pools a spatial map into its D features (a CNN), the map of channel ``neurons[i]``
    in the last module output of shape ``(N, D, h, w)`` (found with forward hooks), upsampled bilinearly to
    ``(H, W)``. Otherwise, the input-gradient saliency of the activation (absolute value, max over colour).
    Each map is min-max normalised. Not differentiable.
    """
    index = _as_index(neurons, len(x), x.device)
    with torch.no_grad(), _pre_pooling_map(classifier.encoder) as found:
        features = classifier.features(x)
    spatial = found["map"]
    if spatial is not None and spatial.shape[:2] == features.shape:
        maps = spatial[torch.arange(len(x), device=x.device), index].float()
        maps = F.interpolate(maps[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        return _normalise(maps)
    with torch.enable_grad():
        probe = x.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(activation(classifier, probe, index).sum(), probe)
    return _normalise(grad.abs().amax(1).float())


class _RedirectedReLU(torch.autograd.Function):
    """ReLU whose gradient, for an image where none passes the ReLU, also reaches negative inputs unless it
    would push them lower (lucid's ``redirected_relu_grad``): a neuron that is off on the grey starting image
    would otherwise never receive a gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        relu_grad = grad * (x > 0)
        passes = relu_grad.flatten(1).norm(dim=1) > 0
        redirected = torch.where((x < 0) & (grad > 0), torch.zeros_like(grad), grad)  # grad > 0: descent lowers x
        return torch.where(passes.view(-1, *[1] * (x.ndim - 1)), relu_grad, redirected)


def _redirected_relu(x: torch.Tensor) -> torch.Tensor:
    return _RedirectedReLU.apply(x)


@contextmanager
def _redirected_relus(model: nn.Module) -> Iterator[None]:
    """Inside, every ``nn.ReLU`` of ``model`` computes :class:`_RedirectedReLU` (same values, other gradients)."""
    relus = [m for m in model.modules() if type(m) is nn.ReLU]
    for m in relus:
        m.forward = _redirected_relu
    try:
        yield
    finally:
        for m in relus:
            del m.forward


@contextmanager
def _frozen(*models: nn.Module) -> Iterator[None]:
    """Eval mode and no parameter gradients inside; each model's mode and ``requires_grad`` restored after."""
    saved = [(m, m.training, [(p, p.requires_grad) for p in m.parameters()]) for m in models]
    for m in models:
        m.eval().requires_grad_(False)
    try:
        yield
    finally:
        for m, training, flags in saved:
            m.train(training)
            for p, flag in flags:
                p.requires_grad_(flag)


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    """``float (N, 3, H, W)`` in [0, 1] -> ``uint8 (N, H, W, 3)``."""
    return (x.detach() * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def visualise(classifier: Classifier, vlm: VLM, *, class_index: int, class_text: str, neurons: Sequence[int],
              samples: int, steps: int, lr: float = 0.05, gamma: float = 0.5, eps: float = 0.05,
              ce_weight: float = 1.0, augmentations: int = 2, image_size: int | None = None,
              seed: int = 0) -> dict[str, np.ndarray]:
    """CLIP-Illusion and activation-maximisation images of each of ``neurons`` for class ``class_index``.

    One batch of ``2 · len(neurons) · samples`` Fourier images is optimised at once with AdamW (``lr``) for
    ``steps`` steps, each step scoring ``augmentations`` augmented copies of every image. Sample ``s`` of
    neuron ``n`` starts from the same random image in both methods. ``class_text``: the class prompt, e.g.
    ``"a photo of a star"``; ``image_size``: the images' side (default: the VLM's input side).
    The models run on the device of the classifier's parameters, in eval mode with frozen parameters (their
    mode and flags are restored after). Deterministic given ``seed``.

    Returns NumPy arrays, K = ``len(neurons)``, S = ``samples``, H = W = ``image_size``:
    ``illusion``, ``baseline`` ``uint8 (K, S, H, W, 3)``; ``illusion_mask``, ``baseline_mask``
    ``float32 (K, S, H, W)`` in [0, 1] (:func:`activation_maps` of the final images);
    ``start_activation``, ``illusion_activation``, ``baseline_activation`` ``float32 (K, S)`` (the neuron's
    activation on the un-augmented images at step 0 and at the end); ``illusion_prediction``,
    ``baseline_prediction`` ``int64 (K, S)`` (the classifier's class for the final images);
    ``illusion_clip``, ``baseline_clip`` ``float32 (K, S)`` (cosine of the final images to the class prompt).
    """
    k, side = len(neurons), int(image_size or vlm.image_size)
    if k < 1 or samples < 1 or steps < 0 or augmentations < 1:
        raise ValueError(f"need neurons, samples >= 1, steps >= 0 and augmentations >= 1; got {k} neurons, "
                         f"samples={samples}, steps={steps}, augmentations={augmentations}")
    device = next(classifier.parameters()).device
    per_method = k * samples
    neuron_index = torch.as_tensor(list(neurons), dtype=torch.long, device=device).repeat_interleave(samples)
    with _frozen(classifier, vlm):
        generator = torch.Generator().manual_seed(int(seed))
        image = FourierImage(2 * per_method, side, generator=generator)
        with torch.no_grad():
            image.spectrum[per_method:] = image.spectrum[:per_method]  # both methods start from the same image
            image = image.to(device)
            class_embedding = vlm.encode_texts([class_text])[0]
            start_features = classifier.features(image()[:per_method])
            n_classes, width = classifier.head(start_features[:1]).shape[1], start_features.shape[1]
        if not 0 <= class_index < n_classes or not all(0 <= n < width for n in neurons):
            raise ValueError(f"class_index must lie in [0, {n_classes}) and neurons in [0, {width}); "
                             f"got class_index={class_index}, neurons={list(neurons)}")
        start = start_features.gather(1, neuron_index[:, None]).squeeze(1)

        target = torch.full((per_method * augmentations,), class_index, dtype=torch.long, device=device)
        aug_neurons = neuron_index.repeat(augmentations)

        def objectives(x: torch.Tensor) -> torch.Tensor:
            """Both methods' objectives ``(2 · augmentations · K · S,)`` on augmented copies of ``x``."""
            illusion_x = augment(x[:per_method].repeat(augmentations, 1, 1, 1), generator)
            baseline_x = augment(x[per_method:].repeat(augmentations, 1, 1, 1), generator)
            features = classifier.features(torch.cat([illusion_x, baseline_x]))
            activations = features.gather(1, aug_neurons.repeat(2)[:, None]).squeeze(1)
            logits = classifier.head(features[:len(illusion_x)])
            clip = vlm.encode_images(illusion_x) @ class_embedding
            illusion = ((clip + eps) * (activations[:len(illusion_x)] + gamma * logits[:, class_index])
                        - ce_weight * F.cross_entropy(logits, target, reduction="none"))
            return torch.cat([illusion, activations[len(illusion_x):]])

        optimiser = torch.optim.AdamW(image.parameters(), lr=lr)
        with _redirected_relus(classifier.encoder):
            for _ in range(steps):
                # a sum over images keeps each image's gradient independent of how many share the batch
                loss = -objectives(image()).sum() / augmentations
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()

        with torch.no_grad():
            x = image()
            features = classifier.features(x)
            both_neurons = neuron_index.repeat(2)
            final = features.gather(1, both_neurons[:, None]).squeeze(1)
            prediction = classifier.head(features).argmax(1)
            clip = vlm.encode_images(x) @ class_embedding
        masks = activation_maps(classifier, x, both_neurons)

    def halves(t: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(2 · K · S, ...)`` -> the illusion and baseline halves, each ``(K, S, ...)``."""
        array = t.cpu().numpy() if isinstance(t, torch.Tensor) else t
        return tuple(half.reshape(k, samples, *array.shape[1:]) for half in (array[:per_method], array[per_method:]))

    out = {"start_activation": start.float().cpu().numpy().reshape(k, samples)}
    for name, value in (("", _to_uint8(x)), ("_mask", masks.float()), ("_activation", final.float()),
                        ("_prediction", prediction.long()), ("_clip", clip.float())):
        out[f"illusion{name}"], out[f"baseline{name}"] = halves(value)
    return out


class Visualiser:
    """:func:`visualise` on a batch of classes, for a Ray Data actor pool (the caller wraps it).

    ``settings``: keyword options of :func:`visualise` (any of ``samples``, ``steps``, ``lr``, ``gamma``,
    ``eps``, ``ce_weight``, ``augmentations``, ``image_size``; ``samples`` and ``steps`` are required).
    ``__call__(batch)`` takes ``class_index`` ``int (B,)``, ``class_text`` ``str (B,)``, ``neurons``
    ``int (B, n)`` (a class's neurons; ``-1`` entries are padding, so classes may have fewer than ``n``) and
    ``seed`` ``int (B,)``, and returns the batch plus each output of :func:`visualise` as a column of one
    row per class, ``(B, n, S, ...)``: padded neurons get zero images and masks, NaN activations and cosines
    and prediction ``-1``.
    """

    def __init__(self, spec: ModelSpec, settings: dict, device: str = "auto"):
        unknown = sorted(set(settings) - set(SETTINGS))
        missing = sorted({"samples", "steps"} - set(settings))
        if unknown or missing:
            raise ValueError(f"visualiser settings: unknown {unknown}, missing {missing}; valid: {list(SETTINGS)}")
        self.settings = dict(settings)
        self.device = resolve_device(device)
        self.classifier = spec.classifier().to(self.device).eval()
        self.vlm = spec.vlm().to(self.device).eval()

    def _row(self, class_index: int, class_text: str, neurons: np.ndarray, seed: int) -> dict[str, np.ndarray]:
        valid = neurons >= 0
        if not valid.any():
            raise ValueError(f"class {class_index} ({class_text!r}) has no neurons to visualise")
        out = visualise(self.classifier, self.vlm, class_index=class_index, class_text=class_text,
                        neurons=[int(n) for n in neurons[valid]], seed=seed, **self.settings)
        padded = {}
        for name, value in out.items():
            fill = -1 if value.dtype == np.int64 else (np.nan if value.dtype == np.float32 and value.ndim == 2 else 0)
            padded[name] = np.full((len(neurons), *value.shape[1:]), fill, dtype=value.dtype)
            padded[name][valid] = value
        return padded

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        neurons = np.stack([np.asarray(n) for n in batch["neurons"]]).astype(np.int64)  # Arrow lists arrive as objects
        if neurons.ndim != 2:
            raise ValueError(f"neurons must be (B, n), got shape {neurons.shape}")
        rows = [self._row(int(c), str(t), n, int(s))
                for c, t, n, s in zip(batch["class_index"], batch["class_text"], neurons, batch["seed"])]
        if not rows:
            return dict(batch)
        return dict(batch) | {name: np.stack([r[name] for r in rows]) for name in rows[0]}
