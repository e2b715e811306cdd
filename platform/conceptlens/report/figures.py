"""Figures (PNG): heatmaps (classes × concepts, values in the cells, significance marked), image montages and
metric curves."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_heatmap(values: np.ndarray, classes: list[str], concepts: list[str], path: str | Path, *, title: str,
                 diverging: bool = False, marks: np.ndarray | None = None, label: str = "mean z-score") -> Path:
    """Write a ``(K, C)`` heatmap. ``diverging``: a red-blue map centred on 0 (differential heatmaps);
    ``marks``: boolean ``(K, C)``, cells to outline (significant ones)."""
    k, c = values.shape
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * c + 2.5), max(3.5, 0.42 * k + 2.2)))
    finite = values[np.isfinite(values)]
    if diverging:
        limit = float(np.abs(finite).max()) if finite.size else 1.0
        image = ax.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    else:
        image = ax.imshow(values, cmap="viridis", aspect="auto")
    ax.set_xticks(range(c), concepts, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(k), classes, fontsize=9)
    ax.set_title(title, fontsize=10)
    if c * k <= 400:
        for i in range(k):
            for j in range(c):
                if np.isfinite(values[i, j]):
                    ax.text(j, i, f"{values[i, j]:.1f}", ha="center", va="center", fontsize=6,
                            color="black" if diverging else "white")
    if marks is not None:
        for i, j in zip(*np.nonzero(marks)):
            ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=1.2))
    fig.colorbar(image, ax=ax, label=label, shrink=0.8)
    return _save(fig, path, 110)


def plot_montage(paths: list[str], path: str | Path, *, title: str, columns: int = 8, size: int = 64) -> Path:
    """Write the images at ``paths`` as one grid PNG (``columns`` wide, each shown at ``size`` px), titled;
    an unreadable image shows as a grey tile."""
    from PIL import Image

    rows = max(1, -(-len(paths) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * size / 72, rows * size / 72 + 0.5), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image_path in zip(axes.ravel(), paths):
        try:
            with Image.open(image_path) as img:
                ax.imshow(np.asarray(img.convert("RGB")))
        except OSError:
            ax.imshow(np.full((size, size, 3), 128, np.uint8))
    fig.suptitle(title, fontsize=8)
    return _save(fig, path, 72)


def plot_curves(panels: dict[str, dict[str, dict[float, float | None]]], path: str | Path, *, title: str,
                ylabel: str = "") -> Path:
    """One panel per ``{panel title: {line label: {x: y}}}`` (None values skipped), side by side, shared y."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False, sharey=True)
    for ax, (name, lines) in zip(axes[0], panels.items()):
        for label, points in lines.items():
            xs = [x for x, y in points.items() if y is not None]
            ax.plot(xs, [points[x] for x in xs], marker="o", label=label)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(name.split(" vs ")[-1] if " vs " in name else "", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(ylabel, fontsize=8)
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path, 110)


def _save(fig, path: str | Path, dpi: int) -> Path:
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def plot_neuron_grid(path: str | Path, *, illusion: np.ndarray, baseline: np.ndarray, illusion_mask: np.ndarray,
                     labels: list[str], title: str) -> Path:
    """Write one class's neuron visualisations: a row per neuron (labelled ``labels[i]``), and per sample three
    columns: the CLIP-Illusion image, that image with where the neuron fires overlaid (a heat map), and the
    activation-maximisation image. ``illusion``, ``baseline``: ``uint8 (K, S, H, W, 3)``; ``illusion_mask``:
    ``float (K, S, H, W)`` in [0, 1]. Images are upscaled with nearest interpolation, so 48 px stay sharp."""
    k, samples = illusion.shape[:2]
    if len(labels) != k:
        raise ValueError(f"need one label per neuron: {k} neurons, {len(labels)} labels")
    headers = ("CLIP-Illusion", "where it fires", "act. max.")
    fig, axes = plt.subplots(k, 3 * samples, figsize=(3 * samples * 1.25 + 2.4, k * 1.3 + 0.6), squeeze=False)
    for i in range(k):
        for s in range(samples):
            left, middle, right = axes[i][3 * s: 3 * s + 3]
            left.imshow(illusion[i, s], interpolation="nearest")
            middle.imshow(illusion[i, s], interpolation="nearest")
            middle.imshow(illusion_mask[i, s], cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0, interpolation="bilinear")
            right.imshow(baseline[i, s], interpolation="nearest")
            if i == 0:
                for ax, header in zip((left, middle, right), headers):
                    ax.set_title(header, fontsize=7)
        axes[i][0].set_ylabel(labels[i], fontsize=7, rotation=0, ha="right", va="center")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path, 110)
