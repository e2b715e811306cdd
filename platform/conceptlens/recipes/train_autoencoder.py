"""The autoencoder recipe: a small convolutional autoencoder whose bottleneck is a feature of failures.

SAFE's "autoencoder" extractor (METHODS.md §3) clusters images by a code learned from the images alone:
no labels and no model under test, so its clusters follow what the images look like. The network is
three stride-2 convolutions (any square side divisible by 8), a linear bottleneck of ``bottleneck``
numbers, and the mirrored decoder with a sigmoid output, trained with mean squared error.

``{cache_dir}/models/autoencoder-<hash>.pt`` holds a checkpoint (hyper-parameters + state dict, see
:func:`load_autoencoder`) with a ``.json`` of how it was trained, keyed by the config, the images and the seed.
"""
from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from conceptlens.config import AutoencoderConfig, Config, config_hash
from conceptlens.models import decode_image, file_digest, resolve_device
from conceptlens.recipes.conceptworld import RECIPE_VERSION, _cached
from conceptlens.recipes.train_classifier import fit

Log = Callable[[str], None]
WIDTHS = (16, 32, 64)  # channels after each stride-2 convolution


class ConvAutoencoder(nn.Module):
    """Float images in [0, 1] ``(N, 3, S, S)`` -> reconstructions of the same shape; ``S`` divisible by 8.

    ``encode(x)``: the bottleneck ``float32 (N, bottleneck)``; ``decode(z)``: images from codes.
    """

    def __init__(self, image_size: int, bottleneck: int, widths: Sequence[int] = WIDTHS):
        super().__init__()
        if image_size % 8 or image_size < 8:
            raise ValueError(f"the autoencoder needs a square image side divisible by 8, not {image_size}")
        self.image_size, self.bottleneck, self.widths = image_size, bottleneck, tuple(widths)
        grid = image_size // 8
        c1, c2, c3 = self.widths
        self.encoder = nn.Sequential(
            nn.Conv2d(3, c1, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(c2, c3, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(c3 * grid * grid, bottleneck))
        self.decoder = nn.Sequential(
            nn.Linear(bottleneck, c3 * grid * grid), nn.ReLU(), nn.Unflatten(1, (c3, grid, grid)),
            nn.ConvTranspose2d(c3, c2, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(c1, 3, 4, stride=2, padding=1), nn.Sigmoid())

    def hyper_parameters(self) -> dict:
        """What :class:`ConvAutoencoder` needs to be rebuilt: ``{"image_size", "bottleneck", "widths"}``."""
        return {"image_size": self.image_size, "bottleneck": self.bottleneck, "widths": list(self.widths)}

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def save_autoencoder(model: ConvAutoencoder, path: str | Path) -> None:
    """Write the hyper-parameters and the state dict: :func:`load_autoencoder` rebuilds the model."""
    torch.save({"hyper_parameters": model.hyper_parameters(), "state_dict": model.state_dict()}, path)


def load_autoencoder(path: str | Path) -> ConvAutoencoder:
    """The :class:`ConvAutoencoder` saved at ``path`` (on the CPU, in eval mode)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"autoencoder checkpoint {path} does not exist")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    model = ConvAutoencoder(**saved["hyper_parameters"])
    model.load_state_dict(saved["state_dict"])
    return model.eval()


def _as_uint8_nchw(images: torch.Tensor) -> torch.Tensor:
    """``uint8`` ``(N, 3, S, S)`` from ``uint8`` NCHW or NHWC, or float NCHW in [0, 1]."""
    if images.dtype.is_floating_point:
        return images.clamp(0, 1).mul(255).round().to(torch.uint8)
    return images if images.shape[1] == 3 else images.permute(0, 3, 1, 2).contiguous()


def train_autoencoder(images: torch.Tensor, cfg: AutoencoderConfig, *, device: torch.device | str, seed: int = 0,
                      log: Log = print) -> tuple[ConvAutoencoder, dict]:
    """Fit a :class:`ConvAutoencoder` with ``cfg.bottleneck`` numbers to ``images`` (AdamW, one-cycle, MSE).

    ``images``: ``uint8`` ``(N, 3, S, S)`` (as :func:`conceptlens.recipes.data.load_images` gives) or
    ``(N, S, S, 3)`` (as decoded batches hold), or float ``(N, 3, S, S)`` in [0, 1]. Random horizontal flips
    are the only augmentation. Stops early, and says so, after ``cfg.train.max_minutes``.
    Returns the model (on ``device``, eval mode) and :func:`~conceptlens.recipes.train_classifier.fit`'s record.
    """
    images = _as_uint8_nchw(images)
    with torch.random.fork_rng(devices=[]):  # seeded initial weights, the caller's random state untouched
        torch.manual_seed(seed)
        model = ConvAutoencoder(images.shape[-1], cfg.bottleneck).to(device).train()
    info = fit(model, images, lambda x, idx: F.mse_loss(model(x), x), cfg.train, device=device, seed=seed, log=log,
               name="autoencoder")
    return model, info


def decode_images(paths: Sequence[str], image_size: int, workers: int = 4) -> torch.Tensor:
    """Image files decoded and resized to ``uint8 (N, 3, image_size, image_size)``; unreadable files are skipped."""
    with ThreadPoolExecutor(workers) as pool:
        decoded = list(pool.map(lambda p: decode_image(p, image_size), paths))
    arrays = [image for image, error in decoded if error is None]
    if not arrays:
        raise ValueError(f"none of the {len(paths)} images could be read to train the autoencoder")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def images_digest(paths: Sequence[str]) -> str:
    """What a list of image files holds, in order, wherever they lie: a hash of their contents' digests."""
    h = hashlib.sha256()
    for path in paths:
        h.update(file_digest(path).encode())
    return h.hexdigest()[:16]


def ensure_autoencoder(cfg: Config, paths: Sequence[str], image_size: int, log: Log = print) -> Path:
    """A checkpoint of ``cfg.rootcause.autoencoder`` trained on the images at ``paths`` (cached).

    The cache key is the config, the images' contents in order (:func:`images_digest`: the same held-out
    images of another world folder reuse the model), the image side and ``rootcause.seed``. Trains on
    ``cfg.run.device``.
    """
    ae, seed = cfg.rootcause.autoencoder, cfg.rootcause.seed
    key = config_hash(ae, {"images": images_digest(paths), "image_size": image_size, "seed": seed}, RECIPE_VERSION)
    path = Path(cfg.run.cache_dir) / "models" / f"autoencoder-{key}.pt"

    def train(tmp: Path) -> dict:
        images = decode_images(paths, image_size)
        device = resolve_device(cfg.run.device)
        log(f"autoencoder: training a {ae.bottleneck}-number bottleneck on {len(images)} images ({device})")
        model, info = train_autoencoder(images, ae, device=device, seed=seed, log=log)
        save_autoencoder(model.cpu(), tmp)
        return info | {"images": len(images), "skipped": len(paths) - len(images)}

    return _cached(path, train, log, "autoencoder")
