"""Images per second of the Ray Data embed pipeline against a plain single-process PyTorch loop.

Same models, images and batch size, in one process run:
  (a) the ConceptWorld models (resnet18 at 64 px + the tiny CLIP), from `conceptlens world`'s cache;
  (b) real architectures at 224 px with random weights: resnet50 + open_clip ViT-B-32.

    .venv/bin/python benchmarks/embed_throughput.py [--images 1024] [--actors 1 2] [--skip-224]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import ray

from conceptlens.config import EmbedConfig, RayConfig
from conceptlens.embedding import Embedder, ModelSpec, decode_batch
from conceptlens.raydata import embed_table, init_ray


def plain_loop(paths: list[str], spec: ModelSpec, size: int, batch: int) -> float:
    start = time.time()
    embedder = Embedder(spec, "auto")
    for i in range(0, len(paths), batch):
        embedder(decode_batch({"path": np.array(paths[i:i + batch])}, size))
    return len(paths) / (time.time() - start)


def ray_pipeline(paths: list[str], spec: ModelSpec, size: int, batch: int, actors: int) -> float:
    table = pa.table({"id": [str(i) for i in range(len(paths))], "path": paths})
    cfg = EmbedConfig(batch_size=batch, actors=actors, actor_num_cpus=0.5, decode_num_cpus=0.25)
    start, n = time.time(), 0
    for out in embed_table(table, spec, cfg, image_size=size):
        n += len(out["id"])
    assert n == len(paths)
    return n / (time.time() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/demo", help="a run whose `world` step finished")
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--skip-224", action="store_true")
    args = parser.parse_args()
    world = Path(args.run) / "world"
    models = json.loads((world / "models.json").read_text())
    paths = pa.parquet.read_table(world / "manifest.parquet", columns=["path"]).column("path").to_pylist()
    paths = paths[-args.images:]
    cases = [("ConceptWorld resnet18 + tiny CLIP, 64 px", 64,
              ModelSpec("resnet18", models["classifier"], "fc", 10, "conceptworld-tiny", models["vlm"]))]
    if not args.skip_224:
        cases.append(("resnet50 + ViT-B-32 (random weights), 224 px", 224,
                      ModelSpec("resnet50", None, "fc", 1000, "ViT-B-32", None)))
    init_ray(RayConfig())
    print(f"{'models':<48}{'plain img/s':>12}{'ray actors':>11}{'ray img/s':>11}{'ratio':>8}")
    for name, size, spec in cases:
        n = args.images if size == 64 else min(args.images, 256)
        ray_pipeline(paths[:args.batch], spec, size, args.batch, 1)  # warm the workers' imports
        base = plain_loop(paths[:n], spec, size, args.batch)
        for actors in args.actors:
            speed = ray_pipeline(paths[:n], spec, size, args.batch, actors)
            print(f"{name:<48}{base:>12.1f}{actors:>11}{speed:>11.1f}{speed / base:>8.2f}", flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
