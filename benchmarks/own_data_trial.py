"""The README's "Your own data" worked example, run and timed: Fashion-MNIST as a user brings it.

A folder of the test set's images (Debian's ``dataset-fashion-mnist``: ``apt-get install dataset-fashion-mnist``)
with one corrupt PNG and one stray text file, a resnet18 the user trained on [0, 1] pixels (no normalisation)
and saved as a torchvision state dict, and no real CLIP weights (an untrained tiny CLIP stands in: the trust
check must hold back everything that rests on it). Then the commands of the README in order, each timed, with
the lines a user reads. Writes ``benchmarks/results/own_data_trial.json``.

    .venv/bin/python benchmarks/own_data_trial.py                 # 3000 images, ~10 min on 2 cores
    .venv/bin/python benchmarks/own_data_trial.py --images 600    # a quicker look
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import gzip
import io
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from conceptlens.cli import main as conceptlens
from conceptlens.config import TrainConfig
from conceptlens.models import build_classifier, build_vlm, save_vlm
from conceptlens.recipes.train_classifier import train_classifier

FMNIST = Path("/usr/share/datasets/fashion-mnist")
NAMES = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
SIZE = 32  # the user's model input side (28-px images resized, as their script does)
RESULTS = Path(__file__).resolve().parent / "results"


def read_idx(kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``uint8 (N, 28, 28)`` and labels ``(N,)`` of ``train`` or ``t10k``."""
    with gzip.open(FMNIST / f"{kind}-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28).copy()
    with gzip.open(FMNIST / f"{kind}-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)
    return images, labels


def resized(images: np.ndarray) -> torch.Tensor:
    """The user's image pipeline: grey to RGB, bilinear to SIZE px; ``uint8 (N, 3, SIZE, SIZE)``."""
    return torch.stack([torch.from_numpy(np.array(Image.fromarray(im).convert("RGB").resize(
        (SIZE, SIZE), Image.BILINEAR))).permute(2, 0, 1) for im in images])


def prepare(home: Path, n_images: int, n_train: int) -> dict:
    """The folder, the user's checkpoint (and its accuracy on the folder by the user's own code) and the VLM."""
    test, test_labels = read_idx("t10k")
    folder = home / "fashion"
    for i, (im, y) in enumerate(zip(test[:n_images], test_labels[:n_images])):
        (folder / NAMES[y]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(folder / NAMES[y] / f"{i:05d}.png")
    (folder / "coat" / "scan_0001.png").write_bytes(b"\x89PNG\r\n truncated")
    (folder / "bag" / "README.txt").write_text("exported from the test set")
    train, train_labels = read_idx("train")
    torch.manual_seed(0)
    model = build_classifier("resnet18", num_classes=10, preprocess="none")
    start = time.time()
    train_classifier(model, resized(train[:n_train]), torch.from_numpy(train_labels[:n_train]),
                     TrainConfig(epochs=3, batch_size=128, lr=2e-3), device=torch.device("cpu"), log=lambda _: None)
    trained = time.time() - start
    state = {k.removeprefix("encoder."): v for k, v in model.state_dict().items() if k.startswith("encoder.")}
    state |= {"fc." + k.removeprefix("head."): v for k, v in model.state_dict().items() if k.startswith("head.")}
    torch.save(state, home / "resnet18_fashion.pt")
    with torch.no_grad():
        pixels = resized(test[:n_images]).float() / 255  # the user's model takes [0, 1] pixels
        own = float((model.eval()(pixels).argmax(1).numpy() == test_labels[:n_images]).mean())
    save_vlm(build_vlm("conceptworld-tiny"), home / "tiny_clip_untrained.pt")
    return {"folder": str(folder), "images": n_images, "train_images": n_train, "train_seconds": trained,
            "own_accuracy": own}


def step(argv: list[str]) -> dict:
    """One command in-process: exit code, seconds and what it printed."""
    out = io.StringIO()
    start = time.time()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = conceptlens(argv)
    seconds = time.time() - start
    print(f"[{seconds:6.1f} s] exit {code}: conceptlens {' '.join(argv)}", flush=True)
    return {"command": "conceptlens " + " ".join(argv), "exit": code, "seconds": round(seconds, 1),
            "output": out.getvalue().splitlines()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000, help="test images in the folder")
    parser.add_argument("--train", type=int, default=10000, help="training images of the user's model")
    parser.add_argument("--home", default="runs/own_data", help="where the folder, models and runs go")
    args = parser.parse_args()
    if not FMNIST.is_dir():
        sys.exit(f"no Fashion-MNIST at {FMNIST}: apt-get install dataset-fashion-mnist")
    home = Path(args.home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    setup = prepare(home, args.images, args.train)
    print(f"the user's model: accuracy {setup['own_accuracy']:.3f} on the folder by their own script", flush=True)
    config = home / "fashion.yaml"
    config.write_text(
        f"run: {{name: fashion, root: {home / 'runs'}}}\n"
        f"data: {{source: {setup['folder']}, image_size: {SIZE}, classes: [{', '.join(NAMES)}]}}\n"
        f"classifier: {{arch: resnet18, checkpoint: {home / 'resnet18_fashion.pt'}, num_classes: 10}}\n"
        f"vlm: {{arch: conceptworld-tiny, pretrained: {home / 'tiny_clip_untrained.pt'}}}\n"
        f"analyze: {{concepts: conceptworld}}\n")
    quick = str(Path(__file__).resolve().parents[1] / "conf" / "profiles" / "quick.yaml")
    steps = [step(["check", "--config", str(config)]),
             step(["check", "--config", str(config), "classifier.preprocess=none"])]
    config.write_text(config.read_text().replace("num_classes: 10}", "num_classes: 10, preprocess: none}"))
    for command, extra in (("embed", []), ("analyze", []), ("rootcause", ["--config", quick]), ("explain", []),
                           ("attack", ["--config", quick]), ("monitor", ["--config", quick]),
                           ("neurons", ["--config", quick]), ("report", [])):
        steps.append(step([command, "--config", str(config), *extra]))
    result = {"setup": setup, "config": config.read_text(), "steps": steps,
              "total_seconds": round(sum(s["seconds"] for s in steps), 1),
              "command": " ".join([Path(sys.executable).name, *sys.argv]),
              "date": datetime.date.today().isoformat(),
              "machine": {"cpus": torch.get_num_threads(), "processor": platform.processor() or platform.machine(),
                          "torch": torch.__version__}}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "own_data_trial.json").write_text(json.dumps(result, indent=1))
    print(f"written: {RESULTS / 'own_data_trial.json'} ({result['total_seconds']:.0f} s of commands)")


if __name__ == "__main__":
    main()
