"""A repair of the decision layer: train only the head, on fixed pooled features, so that each class stops
relying on the neurons its mistakes lack (NeuroInspect's retaining-ratio loss, METHODS.md §2), and the
paper's ablations (cross-entropy, class-weighted cross-entropy, focal loss) trained the same way.

``retain``: ``CE + λ · mean_c |Σ p_c(f with c's neurons zeroed) / Σ p_c(f) − γ|`` (sums over the rows of
class ``c``). A share below 1 says the class's confidence hangs on those neurons; pulling it to γ = 1 makes
the class indifferent to them. METHODS.md writes the per-row ratio the other way up, p_c(f) / p_c(f zeroed),
and averages it: that explodes on rows whose zeroed (or, upside down, original) probability is near 0,
which the paper's training set, fitted to near 100 %, hardly had but held-out rows have (on the README's
second world it drove validation accuracy from 0.60 to 0.48 in one epoch). The share of summed
probabilities has the same fixed point and stays bounded. The checkpoint kept is the epoch with the best
validation accuracy (ties: the best worst-class accuracy).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

LOSSES = ("retain", "ce", "weighted_ce", "focal")


@dataclass(frozen=True)
class RepairSettings:
    loss: str = "retain"  # one of LOSSES
    lam: float = 0.01  # λ, weight of the retaining-ratio term
    gamma: float = 1.0  # γ, the retaining ratio aimed at
    focal_gamma: float = 2.0  # focal loss exponent
    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 256
    seed: int = 0


@dataclass
class Repair:
    """The trained ``head`` (a copy; the input head is untouched), the ``epoch`` chosen (0 = no epoch beat
    the head as it was) and per epoch ``history``: ``{"epoch", "val_accuracy", "val_worst_class"}``."""
    head: nn.Module
    epoch: int
    history: list[dict] = field(default_factory=list)


def neuron_masks(neurons: dict[int, list[int]], num_classes: int, dim: int) -> torch.Tensor:
    """``float32 (K, D)``: row ``c`` is 0 at class ``c``'s chosen neurons and 1 elsewhere."""
    masks = torch.ones(num_classes, dim)
    for c, chosen in neurons.items():
        masks[c, list(chosen)] = 0.0
    return masks


def retaining_ratio(head: nn.Module, f: torch.Tensor, y: torch.Tensor, masks: torch.Tensor,
                    gamma: float) -> torch.Tensor:
    """``mean_c |Σ_{rows of c} p_c(f ⊙ masks[c]) / Σ_{rows of c} p_c(f) − γ|`` over the classes of ``y`` with a
    neuron masked (0 when there is none): the share of each class's probability it retains without its chosen
    neurons, pulled to γ."""
    edited = (masks[y] == 0).any(1)
    if not edited.any():
        return f.new_zeros(())
    f, y = f[edited], y[edited]
    rows = torch.arange(len(y), device=f.device)
    kept, whole = F.softmax(head(f * masks[y]), 1)[rows, y], F.softmax(head(f), 1)[rows, y]
    per_class = [kept[y == c].sum() / whole[y == c].sum().clamp_min(1e-12) for c in torch.unique(y)]
    return (torch.stack(per_class) - gamma).abs().mean()


def class_weights(head: nn.Module, f: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class-weighted cross-entropy's weights: each class's error rate under ``head`` over the mean error rate
    (a class the head gets right everywhere keeps a small weight, 0.1 of the mean)."""
    with torch.no_grad():
        wrong = (head(f).argmax(1) != y).float()
    rate = torch.stack([wrong[y == c].mean() if (y == c).any() else wrong.mean() for c in range(num_classes)])
    rate = rate.clamp_min(0.1 * rate.mean().clamp_min(1e-6))
    return rate / rate.mean()


def _accuracies(head: nn.Module, f: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(accuracy, worst-class accuracy) of ``head`` on ``f``, ``y``."""
    with torch.no_grad():
        right = (head(f).argmax(1) == y).float()
    per_class = [right[y == c].mean().item() for c in torch.unique(y)]
    return right.mean().item(), min(per_class)


def train_head(head: nn.Module, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray], *,
               neurons: dict[int, list[int]], num_classes: int, settings: RepairSettings = RepairSettings(),
               progress: Callable[[int], None] | None = None) -> Repair:
    """Train a copy of ``head`` on ``train`` = (features float32 (N, D), labels int (N,)) with ``settings.loss``
    and keep the epoch best on ``val``. ``neurons``: class index -> neurons whose reliance ``retain`` removes.
    ``progress`` gets 1 after each epoch."""
    s = settings
    if s.loss not in LOSSES:
        raise ValueError(f"unknown repair loss {s.loss!r}; choose one of {LOSSES}")
    torch.manual_seed(s.seed)
    device = next(head.parameters()).device
    f, y = (torch.as_tensor(np.asarray(a), device=device) for a in train)
    fv, yv = (torch.as_tensor(np.asarray(a), device=device) for a in val)
    f, fv, y, yv = f.float(), fv.float(), y.long(), yv.long()
    model = copy.deepcopy(head).train()
    for p in model.parameters():
        p.requires_grad_(True)
    masks = neuron_masks(neurons, num_classes, f.shape[1]).to(device)
    weights = class_weights(model, f, y, num_classes) if s.loss == "weighted_ce" else None
    opt = torch.optim.Adam(model.parameters(), lr=s.lr)
    generator = torch.Generator().manual_seed(s.seed)
    best, best_key, best_epoch, history = copy.deepcopy(model), _accuracies(model, fv, yv), 0, []
    for epoch in range(1, s.epochs + 1):
        for batch in torch.randperm(len(y), generator=generator).split(s.batch_size):
            logits = model(f[batch])
            if s.loss == "focal":
                logp = F.log_softmax(logits, 1).gather(1, y[batch, None])[:, 0]
                loss = (-(1 - logp.exp()) ** s.focal_gamma * logp).mean()
            else:
                loss = F.cross_entropy(logits, y[batch], weight=weights)
            if s.loss == "retain":
                loss = loss + s.lam * retaining_ratio(model, f[batch], y[batch], masks, s.gamma)
            opt.zero_grad()
            loss.backward()
            opt.step()
        key = _accuracies(model, fv, yv)
        history.append({"epoch": epoch, "val_accuracy": key[0], "val_worst_class": key[1]})
        if key > best_key:
            best, best_key, best_epoch = copy.deepcopy(model), key, epoch
        if progress is not None:
            progress(1)
    return Repair(best.eval(), best_epoch, history)
