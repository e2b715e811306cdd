"""Train and evaluate an (encoder, head) classifier on images held in memory."""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from conceptlens.config import TrainConfig
from conceptlens.pipeline.runs import Progress
from conceptlens.recipes.data import counted, minibatches, to_float


def fit(model: torch.nn.Module, images: torch.Tensor, loss_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        cfg: TrainConfig, *, device: torch.device, seed: int = 0, log: Callable[[str], None] = print,
        name: str = "model") -> dict:
    """The recipes' training loop: AdamW with a one-cycle schedule over seeded minibatches of ``images``
    (``uint8 (N, 3, H, W)``, made float in [0, 1], randomly flipped left-right: the only augmentation);
    ``loss_of(x, idx)`` is the loss of the batch ``x`` of rows ``idx``. Says how far it is every 10 s and at
    each epoch's end (with its mean loss and the time left). Stops early, and says so, after
    ``cfg.max_minutes``. Returns ``{"epochs": completed epochs, "loss": last epoch's mean loss, "seconds": ...}``.
    """
    model.to(device).train()
    gen = torch.Generator().manual_seed(seed)
    steps = cfg.epochs * -(-len(images) // cfg.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, pct_start=0.2)
    start, epoch, loss_sum, seen = time.time(), 0, 0.0, 0
    progress = Progress(name, cfg.epochs * len(images), unit="images", log=log)
    for epoch in range(1, cfg.epochs + 1):
        loss_sum, seen = 0.0, 0
        batches = minibatches(len(images), cfg.batch_size, gen)
        for i, idx in enumerate(batches, 1):
            x = to_float(images[idx], device)
            flip = torch.rand(len(x), generator=gen) < 0.5
            x[flip] = x[flip].flip(-1)
            loss = loss_of(x, idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum, seen = loss_sum + loss.item() * len(idx), seen + len(idx)
            progress.update(len(idx), note=f"epoch {epoch}/{cfg.epochs}, loss {loss_sum / seen:.4g}"
                            if i == len(batches) else None)
        elapsed = time.time() - start
        if elapsed > cfg.max_minutes * 60 and epoch < cfg.epochs:
            log(f"{name}: stopping after {epoch} epochs, over train.max_minutes={cfg.max_minutes}")
            break
    model.eval()
    return {"epochs": epoch, "loss": loss_sum / max(seen, 1), "seconds": time.time() - start}


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
