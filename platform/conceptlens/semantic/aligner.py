"""The aligner: an affine map from the classifier's encoder space into the VLM image space.

``A(z) = z @ W + b`` fitted by ridge regression of the VLM image embedding ``e`` on the
encoder features ``z`` (Text-to-Concept, Moayeri et al. 2023, in closed form). The fit streams:
:class:`AlignerFit` accumulates sufficient statistics batch by batch, so a table of any size
fits in ``O(D²)`` memory, and R² comes from the same statistics.
"""
from __future__ import annotations

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
