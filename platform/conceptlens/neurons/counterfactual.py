"""Counterfactual explanations of mistakes on the pooled features, and the neurons they vote for.

For a mistake with features ``f`` and true class ``y``, the explanation is the additive shift ``w`` that
makes the head predict ``y``, learnt with ``CE(head(f + w), y) + α‖w‖₁/D + β‖w‖₂/D`` by SGD with momentum
until the prediction becomes ``y`` (METHODS.md §2). Each row's loss depends on its own ``w`` only, so all
mistakes are solved as one batched problem: a row stops moving once it has flipped, exactly as the
per-mistake loop of the reference code (:func:`solve_one_by_one`, kept for the benchmark and the tests)
stops its optimiser.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

INSUFFICIENT, EXCESSIVE = "insufficient", "excessive"  # the class needs more of it / less of it


@dataclass(frozen=True)
class SolverSettings:
    alpha: float = 0.1  # L1 weight (divided by D)
    beta: float = 0.01  # L2 weight (divided by D)
    lr: float = 0.01
    momentum: float = 0.9
    max_steps: int = 500  # our cap: a row still wrong after it is recorded as never flipped


@dataclass
class Counterfactuals:
    """``shift`` float32 (M, D), ``flipped`` bool (M,) (the head predicts the target with the shift),
    ``steps`` int64 (M,) (optimiser steps the row took)."""
    shift: np.ndarray
    flipped: np.ndarray
    steps: np.ndarray


def _loss(head: nn.Module, features: torch.Tensor, shift: torch.Tensor, targets: torch.Tensor,
          s: SolverSettings) -> torch.Tensor:
    """Sum over rows of each row's loss (so each row's gradient is its own)."""
    d = features.shape[1]
    ce = F.cross_entropy(head(features + shift), targets, reduction="none")
    return (ce + s.alpha * shift.abs().sum(1) / d + s.beta * torch.linalg.vector_norm(shift, dim=1) / d).sum()


def _frozen(head: nn.Module) -> nn.Module:
    head = head.eval()
    for p in head.parameters():
        p.requires_grad_(False)
    return head


def solve(head: nn.Module, features: np.ndarray, targets: np.ndarray,
          settings: SolverSettings = SolverSettings()) -> Counterfactuals:
    """Counterfactual shifts of every row of ``features`` (float32 (M, D)) towards ``targets`` (int (M,)),
    optimised together: SGD with momentum on the rows not yet flipped, the others frozen."""
    s, head = settings, _frozen(head)
    device = next(head.parameters()).device
    f = torch.as_tensor(np.asarray(features, np.float32), device=device)
    y = torch.as_tensor(np.asarray(targets, np.int64), device=device)
    shift = torch.zeros_like(f, requires_grad=True)
    velocity = torch.zeros_like(f)
    active = torch.ones(len(f), dtype=torch.bool, device=device)
    steps = torch.zeros(len(f), dtype=torch.int64, device=device)
    for _ in range(s.max_steps):
        with torch.no_grad():
            active &= head(f + shift).argmax(1) != y
        if not active.any():
            break
        grad, = torch.autograd.grad(_loss(head, f, shift, y, s), shift)
        with torch.no_grad():
            velocity[active] = s.momentum * velocity[active] + grad[active]
            shift[active] -= s.lr * velocity[active]
        steps += active
    with torch.no_grad():
        flipped = head(f + shift).argmax(1) == y
    return Counterfactuals(shift.detach().cpu().numpy(), flipped.cpu().numpy(), steps.cpu().numpy())


def solve_one_by_one(head: nn.Module, features: np.ndarray, targets: np.ndarray,
                     settings: SolverSettings = SolverSettings()) -> Counterfactuals:
    """The reference code's way: one optimiser per mistake (``torch.optim.SGD``), stopped when it flips."""
    s, head = settings, _frozen(head)
    device = next(head.parameters()).device
    shifts, flipped, steps = [], [], []
    for row, target in zip(np.asarray(features, np.float32), np.asarray(targets, np.int64)):
        f = torch.as_tensor(row, device=device)[None]
        y = torch.tensor([target], device=device)
        shift = torch.zeros_like(f, requires_grad=True)
        opt = torch.optim.SGD([shift], lr=s.lr, momentum=s.momentum)
        taken = 0
        for taken in range(s.max_steps + 1):
            with torch.no_grad():
                if head(f + shift).argmax(1).item() == target or taken == s.max_steps:
                    break
            opt.zero_grad()
            _loss(head, f, shift, y, s).backward()
            opt.step()
        with torch.no_grad():
            flipped.append(head(f + shift).argmax(1).item() == target)
        shifts.append(shift.detach().cpu().numpy()[0])
        steps.append(taken)
    d = np.asarray(features).shape[1]
    return Counterfactuals(np.array(shifts, np.float32).reshape(-1, d), np.array(flipped, bool),
                           np.array(steps, np.int64))


@dataclass
class Votes:
    """Per voted neuron: ``target`` class index, ``neuron``, ``direction`` (insufficient: the mistakes lack
    it; excessive: they have too much), ``votes`` and ``share`` of the class's flipped mistakes, and the
    class's ``mistakes`` (flipped ones) and ``never_flipped``. All (V,) arrays, sorted by class then share."""
    target: np.ndarray
    neuron: np.ndarray
    direction: np.ndarray
    votes: np.ndarray
    share: np.ndarray
    mistakes: np.ndarray
    never_flipped: np.ndarray

    def of(self, target: int, direction: str = INSUFFICIENT) -> np.ndarray:
        """The neurons voted for class ``target`` in ``direction``, most voted first."""
        keep = (self.target == target) & (self.direction == direction)
        return self.neuron[keep]


def vote(cf: Counterfactuals, targets: np.ndarray, *, top: int = 5, min_share: float = 0.03) -> Votes:
    """Each flipped mistake votes for its ``top`` largest positive shifts (insufficient neurons) and its ``top``
    most negative ones (excessive); per class and direction, neurons voted by more than ``min_share`` of the
    class's flipped mistakes are kept."""
    targets = np.asarray(targets)
    rows: list[tuple] = []
    for target in np.unique(targets):
        mine = targets == target
        shift = cf.shift[mine & cf.flipped]
        n, never = len(shift), int((mine & ~cf.flipped).sum())
        if not n:
            continue
        for direction, signed in ((INSUFFICIENT, shift), (EXCESSIVE, -shift)):
            order = np.argsort(-signed, axis=1, kind="stable")[:, :top]
            chosen = np.take_along_axis(signed, order, 1) > 0
            counts = np.bincount(order[chosen], minlength=shift.shape[1])
            for neuron in np.flatnonzero(counts / n > min_share):
                rows.append((int(target), int(neuron), direction, int(counts[neuron]), counts[neuron] / n, n, never))
    rows.sort(key=lambda r: (r[0], r[2] != INSUFFICIENT, -r[4], r[1]))
    cols = list(zip(*rows)) if rows else [[]] * 7
    dtypes = (np.int64, np.int64, object, np.int64, np.float64, np.int64, np.int64)
    return Votes(*(np.array(c, dtype=t) for c, t in zip(cols, dtypes)))
