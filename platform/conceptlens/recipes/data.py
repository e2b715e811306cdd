"""Images in memory for the training recipes: the worlds are small enough (20k × 64² × 3 bytes)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image


def _load(path: str) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def load_images(paths: Sequence[str], workers: int = 4) -> torch.Tensor:
    """Decode image files of one size into a ``uint8`` tensor ``(N, 3, H, W)``."""
    with ThreadPoolExecutor(workers) as pool:
        arrays = list(pool.map(_load, paths, chunksize=256))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def to_float(batch: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``uint8 (N, 3, H, W)`` -> ``float32`` in [0, 1] on ``device``."""
    return batch.to(device, non_blocking=True).float().div_(255)


def minibatches(n: int, batch_size: int, generator: torch.Generator | None = None):
    """Index tensors covering ``range(n)`` in batches, shuffled when a generator is given."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    return order.split(batch_size)


def counted(batches: Iterable[torch.Tensor], progress: Callable[[int], None] | None) -> Iterator[torch.Tensor]:
    """``batches`` (index tensors), each one's size passed to ``progress`` once the caller is done with it (when
    it asks for the next); ``progress=None``: ``batches`` as they are."""
    for idx in batches:
        yield idx
        if progress is not None:
            progress(len(idx))
