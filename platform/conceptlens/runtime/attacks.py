"""Adversarial examples for the ``attack`` command, built on ``torchattacks``.

All attacks are untargeted and bounded in L∞ by ``eps`` on images in [0, 1]:

- ``fgsm``: one signed-gradient step of size ``eps`` (Goodfellow et al. 2015);
- ``pgd``: ``steps`` signed-gradient steps of size 2.5·eps/steps from a random start (Madry et al. 2018);
- ``apgd``: APGD-CE, the step-size-free first component of AutoAttack (Croce & Hein 2020), one restart.

The model maps float images in [0, 1] (N, 3, H, W) to logits (N, K); any normalisation lives inside it.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import torch

from conceptlens.models.device import autocast, resolve_precision

__all__ = ["ATTACKS", "attack_images", "success_rate"]

ATTACKS = ("fgsm", "pgd", "apgd")


@contextmanager
def _frozen_eval(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode and no parameter gradients inside; the caller's mode and requires_grad restored after."""
    training = model.training
    requires = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in requires:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in requires:
            p.requires_grad_(flag)
        model.train(training)


def _build(model: torch.nn.Module, attack: str, eps: float, steps: int, seed: int):
    try:
        import torchattacks
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("the attack command needs torchattacks: `pip install --no-deps torchattacks` "
                          "(its requests pin clashes with ray and mlflow)") from err
    if attack == "fgsm":
        return torchattacks.FGSM(model, eps=eps)
    if attack == "pgd":
        return torchattacks.PGD(model, eps=eps, alpha=2.5 * eps / steps, steps=steps, random_start=True)
    return torchattacks.APGD(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, seed=seed, loss="ce")


def _check_inputs(images: torch.Tensor, labels: torch.Tensor, eps: float, steps: int) -> None:
    """ValueError unless ``eps`` is finite and ≥ 0, ``steps`` ≥ 1, ``images`` (N, C, H, W) in [0, 1] and ``labels`` (N,)."""
    if not (math.isfinite(eps) and eps >= 0) or steps < 1:
        raise ValueError(f"need a finite eps >= 0 and steps >= 1, got eps={eps}, steps={steps}")
    if images.ndim != 4 or labels.shape != images.shape[:1]:
        raise ValueError(f"need images (N, C, H, W) and labels (N,), got {tuple(images.shape)} "
                         f"and {tuple(labels.shape)}")
    if images.numel() and (images.min() < 0 or images.max() > 1):
        raise ValueError("images must lie in [0, 1]; normalisation belongs inside the model")


def attack_images(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, attack: str,
                  eps: float, *, steps: int = 10, seed: int = 0, precision: str = "fp32") -> torch.Tensor:
    """Adversarial versions of ``images`` float (N, C, H, W) in [0, 1] against the true ``labels``
    int (N,): float in [0, 1], same shape, dtype and device, with ``|adv - images| <= eps``.
    ``precision`` ``bf16`` (or ``auto`` where the device computes bfloat16 fast): the model's forward and
    backward passes in bfloat16 autocast (the gradients' signs, all that FGSM and PGD step on, barely change;
    the image and its budget stay float32).

    Deterministic given ``seed``; the caller's global RNG state, the model's train/eval mode and
    its parameters' ``requires_grad`` are left as they were."""
    if attack not in ATTACKS:
        raise ValueError(f"unknown attack {attack!r}; valid attacks: {', '.join(ATTACKS)}")
    _check_inputs(images, labels, eps, steps)
    precision = resolve_precision(precision, images.device)
    if eps == 0 or images.numel() == 0:
        return images.detach().clone()
    devices = [images.device] if images.device.type == "cuda" else []
    # forking keeps the attack's random start from shifting the caller's random stream
    with torch.random.fork_rng(devices=devices), _frozen_eval(model), autocast(precision, images.device):
        torch.manual_seed(seed)
        atk = _build(model, attack, float(eps), int(steps), seed)
        adv = atk(images.detach().float(), labels.detach().long())
    adv = torch.min(torch.max(adv.detach().to(images.device), images - eps), images + eps)
    return adv.clamp(0.0, 1.0).to(images.dtype)


@torch.no_grad()
def _predict(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    return model(images).argmax(dim=1)


def success_rate(model: torch.nn.Module, clean: torch.Tensor, adversarial: torch.Tensor,
                 labels: torch.Tensor) -> float:
    """Share of the inputs the model classifies correctly when clean whose prediction the
    attack changed; NaN when none is correct. ``clean``/``adversarial`` (N, C, H, W), ``labels`` (N,)."""
    with _frozen_eval(model):
        before, after = _predict(model, clean), _predict(model, adversarial)
    correct = before == labels.to(before.device)
    if not bool(correct.any()):
        return math.nan
    return float((after[correct] != before[correct]).float().mean())


class Attacker:
    """Adversarial versions of a batch of decoded images under each ``(attack, eps)`` of ``configs``.

    ``__call__(batch)`` takes ``image`` ``uint8 (N, H, W, 3)``, ``label_index`` and pass-through
    columns, and returns one row per (input, config): the pass-through columns, ``image`` (the
    adversarial image quantised to ``uint8``, as it would be stored), ``attack``, ``epsilon`` (in
    1/255 units), ``clean_prediction`` and ``adversarial_prediction`` (on the quantised image).
    Rows whose image failed to decode (``error`` set) are dropped.
    """

    def __init__(self, classifier: torch.nn.Module, configs: list[tuple[str, float]], *, steps: int = 10,
                 seed: int = 0, device: str | torch.device = "cpu", precision: str = "fp32"):
        unknown = sorted({a for a, _ in configs} - set(ATTACKS))
        if unknown:
            raise ValueError(f"unknown attack(s) {unknown}; valid attacks: {', '.join(ATTACKS)}")
        # channels-last weights, the layout of the input made from (N, H, W, 3) images: ~20 % faster on CPU
        self.classifier = classifier.to(device).eval().to(memory_format=torch.channels_last)
        self.configs = list(configs)
        self.steps, self.seed, self.device = steps, seed, torch.device(device)
        self.precision = precision

    @classmethod
    def for_spec(cls, spec, configs: list[tuple[str, float]], *, steps: int = 10, seed: int = 0,
                 device: str = "auto", precision: str = "fp32") -> "Attacker":
        """An attacker on the classifier a :class:`conceptlens.models.ModelSpec` names (for a worker to build)."""
        from conceptlens.models import resolve_device

        return cls(spec.classifier(), configs, steps=steps, seed=seed, device=resolve_device(device),
                   precision=precision)

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        ok = np.asarray([not e for e in batch.get("error", [""] * len(batch["image"]))], bool)
        keep = {k: v[ok] for k, v in batch.items() if k not in ("image", "error")}
        x = torch.from_numpy(np.ascontiguousarray(batch["image"][ok])).to(self.device).permute(0, 3, 1, 2).float() / 255
        y = torch.as_tensor(keep["label_index"], device=self.device).long()
        clean = _predict(self.classifier, x).cpu().numpy() if len(x) else np.zeros(0, np.int64)
        parts = []
        for attack, eps in self.configs:
            adv = attack_images(self.classifier, x, y, attack, eps / 255, steps=self.steps, seed=self.seed,
                                precision=self.precision) if len(x) else x
            stored = (adv * 255).round().to(torch.uint8)
            parts.append(keep | {"image": stored.permute(0, 2, 3, 1).cpu().numpy(),
                                 "attack": np.full(len(x), attack, dtype=object),
                                 "epsilon": np.full(len(x), float(eps)),
                                 "clean_prediction": clean,
                                 "adversarial_prediction": _predict(self.classifier, stored.float() / 255).cpu().numpy()})
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
