"""The aligner: an affine map from the classifier's encoder space into the VLM image space.

``A(z) = z @ W + b`` fitted by ridge regression of the VLM image embedding ``e`` on the
encoder features ``z`` (Text-to-Concept, Moayeri et al. 2023, in closed form). The fit streams:
:class:`AlignerFit` accumulates sufficient statistics batch by batch, so a table of any size
fits in ``O(D²)`` memory, and R² comes from the same statistics. Fits add and subtract
(``a + b`` describes the rows of both), so k-fold cross-validation needs one pass over the rows
(:func:`cross_validated_r2`).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Aligner:
    """``W``: ``float32 (D, E)``; ``b``: ``float32 (E,)``; ``r2``: variance of ``e`` explained on the fit set."""
    W: np.ndarray
    b: np.ndarray
    r2: float = float("nan")

    def __call__(self, z: np.ndarray) -> np.ndarray:
        """Aligned features ``float32 (N, E)`` of encoder features ``(N, D)`` (not normalised)."""
        return np.asarray(z, np.float32) @ self.W + self.b

    def save(self, path: str | Path) -> None:
        np.savez(path, W=self.W, b=self.b, r2=self.r2)

    @classmethod
    def load(cls, path: str | Path) -> "Aligner":
        data = np.load(path)
        return cls(data["W"], data["b"], float(data["r2"]))


class AlignerFit:
    """Streaming ridge regression: ``update(z, e)`` per batch, then ``solve(ridge)``."""

    def __init__(self):
        self.n = 0
        self.zz = self.ze = self.z_sum = self.e_sum = None
        self.ee = 0.0

    def update(self, z: np.ndarray, e: np.ndarray) -> None:
        z, e = np.asarray(z, np.float64), np.asarray(e, np.float64)
        if not len(z):
            return
        if self.zz is None:
            self.zz, self.ze = np.zeros((z.shape[1],) * 2), np.zeros((z.shape[1], e.shape[1]))
            self.z_sum, self.e_sum = np.zeros(z.shape[1]), np.zeros(e.shape[1])
        self.n += len(z)
        self.zz += z.T @ z
        self.ze += z.T @ e
        self.z_sum += z.sum(0)
        self.e_sum += e.sum(0)
        self.ee += float((e * e).sum())

    def __add__(self, other: "AlignerFit") -> "AlignerFit":
        return self._combine(other, 1.0)

    def __sub__(self, other: "AlignerFit") -> "AlignerFit":
        """The statistics of this fit's rows without ``other``'s (which must be among them)."""
        return self._combine(other, -1.0)

    def _combine(self, other: "AlignerFit", sign: float) -> "AlignerFit":
        if other.n == 0:
            return copy.deepcopy(self)
        if self.n == 0:
            if sign < 0:
                raise ValueError("cannot subtract rows from an empty AlignerFit")
            return copy.deepcopy(other)
        out = AlignerFit()
        out.n = self.n + int(sign) * other.n
        for name in ("zz", "ze", "z_sum", "e_sum", "ee"):
            setattr(out, name, getattr(self, name) + sign * getattr(other, name))
        return out

    def squared_error(self, aligner: Aligner) -> float:
        """``Σ ||A(z) - e||²`` over this fit's rows, from the statistics alone."""
        if self.n == 0:
            return 0.0
        W, b = np.asarray(aligner.W, np.float64), np.asarray(aligner.b, np.float64)
        return (float(np.sum(W * (self.zz @ W))) + 2 * float(b @ (W.T @ self.z_sum)) + self.n * float(b @ b)
                - 2 * float(np.sum(W * self.ze)) - 2 * float(b @ self.e_sum) + self.ee)

    def total_variation(self) -> float:
        """``Σ ||e - ē||²`` over this fit's rows (the denominator of R²)."""
        return self.ee - float(self.e_sum @ self.e_sum) / self.n if self.n else 0.0

    def solve(self, ridge: float = 1e-2) -> Aligner:
        """The ridge solution on centred data; ``ridge`` is relative to the mean feature variance."""
        if self.n < 2:
            raise ValueError(f"the aligner needs at least 2 rows to fit, got {self.n}")
        z_mean, e_mean = self.z_sum / self.n, self.e_sum / self.n
        czz = self.zz - self.n * np.outer(z_mean, z_mean)
        cze = self.ze - self.n * np.outer(z_mean, e_mean)
        lam = ridge * np.trace(czz) / len(czz)
        W = np.linalg.solve(czz + lam * np.eye(len(czz)), cze)
        b = e_mean - z_mean @ W
        total = self.ee - self.n * float(e_mean @ e_mean)
        residual = total - 2 * float(np.sum(W * cze)) + float(np.sum(W * (czz @ W)))
        return Aligner(W.astype(np.float32), b.astype(np.float32), 1 - residual / total)


class HeldOutR2:
    """Streaming R² of an aligner on rows it was not fitted on: ``update(z, e)`` per batch, then ``value``."""

    def __init__(self, aligner: Aligner):
        self.aligner, self.n, self.residual, self.squares, self.total = aligner, 0, 0.0, 0.0, None

    def update(self, z: np.ndarray, e: np.ndarray) -> None:
        e = np.asarray(e, np.float64)
        if not len(e):
            return
        self.n += len(e)
        self.residual += float(((self.aligner(z) - e) ** 2).sum())
        self.squares += float((e * e).sum())
        self.total = e.sum(0) if self.total is None else self.total + e.sum(0)

    @property
    def value(self) -> float:
        if self.n < 2:
            return float("nan")
        return 1 - self.residual / (self.squares - float(self.total @ self.total) / self.n)


def cross_validated_r2(folds: list[AlignerFit], ridge: float = 1e-2) -> float:
    """k-fold cross-validated R² from per-fold statistics: fold ``k`` is predicted by the aligner fitted
    on the other folds (their sum); ``1 - Σ_k squared error_k / Σ ||e - ē||²`` over the held-out rows
    (all rows, unless a fold is empty or its complement has under 2 rows). NaN with fewer than two such folds."""
    total = sum(folds[1:], folds[0])
    error, used = 0.0, 0
    for fold in folds:
        if fold.n == 0 or total.n - fold.n < 2:
            continue
        error += fold.squared_error((total - fold).solve(ridge))
        used += 1
    if used < 2:
        return float("nan")
    held = sum((f for f in folds if f.n and total.n - f.n >= 2), AlignerFit())
    return 1 - error / held.total_variation()
