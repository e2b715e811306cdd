"""Images per second of the Ray Data embed pipeline against a plain single-process PyTorch loop.

Same models, images and batch size, in one process run. End to end (models loaded inside the
timing, Ray actors started inside it) and steady state (after the first batch arrives):
  (a) the ConceptWorld models (resnet18 at 48 px + the tiny CLIP), from `conceptlens world`'s cache;
  (b) real architectures at 224 px with random weights: resnet50 + open_clip ViT-B-32.

    .venv/bin/python benchmarks/embed_throughput.py [--images 1024] [--actors 1 2] [--skip-224]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import ray

from conceptlens.config import EmbedConfig, RayConfig
from conceptlens.models.embedding import Embedder, ModelSpec, decode_batch
from conceptlens.pipeline.raydata import embed_table, init_ray


def rates(batches, total: int) -> tuple[float, float]:
    """(end-to-end img/s from the call, steady img/s after the first batch) of an iterator of batches."""
    start, n, first, count = time.time(), 0, None, 0
    for batch in batches:
        n, count = n + len(batch["id"]), count + 1
        if first is None:
            first, after_first = time.time(), n
    assert n == total
    end = time.time()
    steady = (n - after_first) / (end - first) if count >= 3 else float("nan")  # too few batches to tell
    return n / (end - start), steady


def plain_loop(paths: list[str], spec: ModelSpec, size: int, batch: int) -> tuple[float, float]:
    def batches():
        embedder = Embedder(spec, "auto")
        for i in range(0, len(paths), batch):
            yield embedder(decode_batch({"id": np.arange(len(paths[i:i + batch])), "path": np.array(paths[i:i + batch])},
                                        size))
    return rates(batches(), len(paths))


def ray_pipeline(paths: list[str], spec: ModelSpec, size: int, batch: int, actors: int) -> tuple[float, float]:
    table = pa.table({"id": [str(i) for i in range(len(paths))], "path": paths})
    threads = max(1, (os.cpu_count() or 1) // actors)  # the plain loop uses every core; so do the actors together
    cfg = EmbedConfig(batch_size=batch, actors=actors, actor_num_cpus=0.5, decode_num_cpus=0.25, torch_threads=threads)
    return rates(embed_table(table, spec, cfg, image_size=size), len(paths))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/demo", help="a run whose `world` step finished")
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--skip-224", action="store_true")
    args = parser.parse_args()
    world = Path(args.run) / "world"
    models = json.loads((world / "models.json").read_text())
    paths = pa.parquet.read_table(world / "manifest.parquet", columns=["path"]).column("path").to_pylist()
    paths = paths[-args.images:]
    cases = [("ConceptWorld resnet18 + tiny CLIP, 48 px", 48,
              ModelSpec("resnet18", models["classifier"], "fc", 10, "conceptworld-tiny", models["vlm"]))]
    if not args.skip_224:
        cases.append(("resnet50 + ViT-B-32 (random weights), 224 px", 224,
                      ModelSpec("resnet50", None, "fc", 1000, "ViT-B-32", None)))
    init_ray(RayConfig())
    print(f"{'models':<46}{'actors':>7}{'plain img/s':>12}{'ray img/s':>10}{'ratio':>7}"
          f"{'steady plain':>13}{'steady ray':>11}{'ratio':>7}")
    for name, size, spec in cases:
        n = args.images if size == 48 else min(args.images, 256)
        ray_pipeline(paths[:args.batch], spec, size, args.batch, 1)  # warm the workers' imports
        base = plain_loop(paths[:n], spec, size, args.batch)
        for actors in args.actors:
            speed = ray_pipeline(paths[:n], spec, size, args.batch, actors)
            print(f"{name:<46}{actors:>7}{base[0]:>12.1f}{speed[0]:>10.1f}{speed[0] / base[0]:>7.2f}"
                  f"{base[1]:>13.1f}{speed[1]:>11.1f}{speed[1] / base[1]:>7.2f}", flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
