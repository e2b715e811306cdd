"""Train and evaluate an (encoder, head) classifier on images held in memory."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from conceptlens.config import TrainConfig
from conceptlens.recipes.data import counted, minibatches, to_float
from conceptlens.recipes.loop import train_loop


def fit(model: torch.nn.Module, images: torch.Tensor, loss_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        cfg: TrainConfig, *, device: torch.device | str, seed: int = 0, log: Callable[[str], None] = print,
        name: str = "model") -> dict:
    """Train ``model`` with :func:`~conceptlens.recipes.loop.train_loop` on minibatches of ``images``
    (``uint8 (N, 3, H, W)``, made float in [0, 1], randomly flipped left-right: the only augmentation), weights and
    inputs channels-last (faster convolutions on CPU); ``loss_of(x, idx)`` is the loss of the batch ``x`` of rows
    ``idx``. Returns the loop's record (epochs, last epoch's mean loss, seconds, precision); the model is left in
    eval mode, its weights contiguous again.
    """
    model.to(device).to(memory_format=torch.channels_last).train()
    flips = torch.Generator().manual_seed(seed + 1)

    def step(idx: torch.Tensor) -> torch.Tensor:
        x = to_float(images[idx], device)
        flip = torch.rand(len(x), generator=flips) < 0.5
        x[flip] = x[flip].flip(-1)
        return loss_of(x.contiguous(memory_format=torch.channels_last), idx)

    info = train_loop(name, len(images), cfg, model.parameters(), step, device=device, seed=seed, log=log,
                      unit="images")
    model.to(memory_format=torch.contiguous_format).eval()  # checkpoints in the layout everyone expects
    return info


def train_classifier(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig, *,
                     device: torch.device, seed: int = 0, log: Callable[[str], None] = print) -> dict:
    """Fit ``model`` (float images in [0, 1] -> logits) to ``labels`` ``int64 (N,)`` with cross-entropy
    (:func:`fit`)."""
    return fit(model, images, lambda x, idx: F.cross_entropy(model(x), labels[idx].to(device)), cfg,
               device=device, seed=seed, log=log, name="classifier")


@torch.no_grad()
def predict(model: torch.nn.Module, images: torch.Tensor, *, device: torch.device,
            batch_size: int = 256, progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Predicted class (``int64 (N,)``) and its softmax confidence (``float32 (N,)``); ``progress`` gets each
    batch's size when it is done."""
    model.to(device).eval()
    preds, confs = [], []
    for idx in counted(minibatches(len(images), batch_size), progress):
        probs = model(to_float(images[idx], device)).softmax(-1)
        conf, pred = probs.max(-1)
        preds.append(pred.cpu())
        confs.append(conf.cpu())
    return torch.cat(preds).numpy(), torch.cat(confs).numpy()
