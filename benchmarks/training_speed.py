"""Training and attack steps per second in each precision, against the float32 recipe, in one process run.

The demo's two trainings and its `attack` step are most of `make demo`; this measures what the precision
settings (`train.precision`, `attack.precision`: `auto` = bfloat16 where the hardware computes it) buy, on the
demo's shapes (48 px, batch 128 for training, 64 for attacks) with the demo's architectures:
  - the classifier (torchvision resnet18): a training step (forward, backward, AdamW);
  - the tiny CLIP's vision tower (timm resnet18 in open_clip) in its supervised pre-training;
  - PGD-10 on the classifier (input gradients only, weights frozen).
Each variant runs for ``--seconds`` after a warm-up, interleaved round-robin over ``--rounds`` so that a
machine whose load changes hurts every variant alike; the table gives the median rate and its ratio to float32
(the recipe before mixed precision: contiguous NCHW, float32).

    .venv/bin/python benchmarks/training_speed.py [--seconds 8] [--rounds 3] [--threads 2]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F

from conceptlens.models import build_classifier, build_vlm
from conceptlens.models.device import autocast, bf16_is_fast
from conceptlens.runtime.attacks import attack_images

VARIANTS = {"fp32": ("fp32", False), "fp32 channels-last": ("fp32", True), "bf16 channels-last": ("bf16", True)}


def training_step(model: torch.nn.Module, batch: int, precision: str, channels_last: bool):
    model = model.train().to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    x, y = torch.rand(batch, 3, 48, 48), torch.randint(0, 10, (batch,))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step() -> int:
        with autocast(precision, torch.device("cpu")):
            loss = F.cross_entropy(model(x)[:, :10], y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return batch
    return step


def attack_step(model: torch.nn.Module, batch: int, precision: str, channels_last: bool):
    model = model.eval().to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    x, y = torch.rand(batch, 3, 48, 48), torch.randint(0, 10, (batch,))
    return lambda: len(attack_images(model, x, y, "pgd", 8 / 255, steps=10, precision=precision))


def rate(step, seconds: float) -> float:
    step()  # warm-up: oneDNN picks its kernels
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        n += step()
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    print(f"CPU computes bfloat16 in hardware: {bf16_is_fast(cpu)}; {args.threads} threads; "
          f"{args.rounds} rounds of {args.seconds:g} s per variant")
    vision = build_vlm("conceptworld-tiny").model.visual
    cases = {"classifier training (img/s)": (lambda: build_classifier("resnet18", num_classes=10), training_step, 128),
             "CLIP vision pre-training (img/s)": (lambda: vision, training_step, 128),
             "PGD-10 on the classifier (rows/s)": (lambda: build_classifier("resnet18", num_classes=10), attack_step, 64)}
    print(f"{'':36}" + "".join(f"{v:>22}" for v in VARIANTS))
    for name, (make, kind, batch) in cases.items():
        model = make()
        steps = {v: kind(copy.deepcopy(model), batch, *VARIANTS[v]) for v in VARIANTS}  # a model each: own layout
        rates = {v: [] for v in VARIANTS}
        for _ in range(args.rounds):
            for v, step in steps.items():
                rates[v].append(rate(step, args.seconds))
        med = {v: statistics.median(r) for v, r in rates.items()}
        print(f"{name:36}" + "".join(f"{med[v]:>11.0f} ({med[v] / med['fp32']:.2f}x)".rjust(22) for v in VARIANTS))


if __name__ == "__main__":
    main()
