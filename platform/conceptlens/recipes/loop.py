"""The recipes' one training loop."""
from __future__ import annotations

import time
from typing import Callable

import torch

from conceptlens.config import TrainConfig
from conceptlens.models.device import autocast, resolve_precision
from conceptlens.pipeline.runs import Progress
from conceptlens.recipes.data import minibatches

Log = Callable[[str], None]


def train_loop(name: str, n: int, tc: TrainConfig, params, step: Callable[[torch.Tensor], torch.Tensor], *,
               device: torch.device | str, seed: int = 0, log: Log = print, pct_start: float = 0.2,
               unit: str = "samples", precision: str | None = None) -> dict:
    """AdamW with a one-cycle schedule over seeded shuffled minibatches of ``range(n)``; ``step(idx)`` returns the
    batch's loss, computed in ``precision`` (default ``tc.precision``; see :func:`resolve_precision`). Says how far
    it is every 10 s and at each epoch's end (with its mean loss and the time left). Stops early, and says so,
    after ``tc.max_minutes``. Returns ``{"epochs", "loss" (last epoch's mean), "seconds", "precision"}``."""
    device = torch.device(device)
    precision = resolve_precision(precision or tc.precision, device)
    opt = torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
    steps = tc.epochs * -(-n // tc.batch_size)
    # one cycle needs a step in each phase: on a handful of steps the warm-up takes two, on fewer than four the rate
    # stays at tc.lr
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=tc.lr, total_steps=steps,
                                                pct_start=min(max(pct_start, 2 / steps), 0.5)) if steps >= 4 else \
        torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    gen, start, epoch, total, seen = torch.Generator().manual_seed(seed), time.time(), 0, 0.0, 0
    progress = Progress(name, tc.epochs * n, unit=unit, log=log)
    for epoch in range(1, tc.epochs + 1):
        total, seen = 0.0, 0
        batches = minibatches(n, tc.batch_size, gen)
        for i, idx in enumerate(batches, 1):
            with autocast(precision, device):
                loss = step(idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total, seen = total + loss.item() * len(idx), seen + len(idx)
            progress.update(len(idx), note=f"epoch {epoch}/{tc.epochs}, loss {total / seen:.4g}"
                            if i == len(batches) else None)
        if time.time() - start > tc.max_minutes * 60 and epoch < tc.epochs:
            log(f"{name}: stopping after {epoch} epochs, over max_minutes={tc.max_minutes}")
            break
    return {"epochs": epoch, "loss": total / max(seen, 1), "seconds": time.time() - start, "precision": precision}
