"""The Ray Data adapter: the one library module that imports Ray.

Decoding runs as CPU tasks, the models in an actor pool (GPUs per actor from config); the
output streams back in input order so the caller can write deterministic shards.
"""
from __future__ import annotations

import logging
import os
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import ray
import torch
from ray.data import ActorPoolStrategy

from conceptlens.config import EmbedConfig, RayConfig
from conceptlens.embedding import Embedder, ModelSpec, decode_batch
from conceptlens.models import build_classifier
from conceptlens.recipes.data import resolve_device


def init_ray(cfg: RayConfig) -> None:
    """Connect to ``ray.address`` / ``RAY_ADDRESS`` if given, else start a small local Ray."""
    ray.data.DataContext.get_current().enable_progress_bars = False  # the jobs print their own progress
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    if ray.is_initialized():
        return
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        # "local" starts a fresh Ray even when an earlier one's address is still recorded in /tmp/ray
        ray.init(address="local", num_cpus=cfg.num_cpus, include_dashboard=False, log_to_driver=False,
                 object_store_memory=cfg.object_store_mb * 2**20)


class _EmbedActor:
    """An :class:`Embedder` in a Ray actor; tags each row with the node that computed it."""

    def __init__(self, spec: ModelSpec, device: str, threads: int = 0):
        if threads:
            torch.set_num_threads(threads)
        self.embedder = Embedder(spec, device)
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self.embedder(batch)
        out["node_id"] = np.array([self.node] * len(out["id"]), dtype=object)
        return out


class _AttackActor:
    """An :class:`Attacker` on the classifier of ``spec`` in a Ray actor."""

    def __init__(self, spec: ModelSpec, configs: list[tuple[str, float]], steps: int, seed: int, device: str,
                 threads: int = 0):
        from conceptlens.attacks import Attacker

        if threads:
            torch.set_num_threads(threads)
        self.attacker = Attacker(build_classifier(spec.classifier_arch, num_classes=spec.num_classes,
                                                  head=spec.classifier_head, weights=spec.classifier_weights,
                                                  checkpoint=spec.classifier_checkpoint),
                                 configs, steps=steps, seed=seed, device=resolve_device(device))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.attacker(batch)


def _images_through_actors(table: pa.Table, actor: type, args: tuple, pool: EmbedConfig, *, batch_size: int,
                           image_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Decode ``table``'s images in CPU tasks, run them through a pool of ``actor(*args)``, stream in input order."""
    blocks = [table.slice(i, batch_size) for i in range(0, table.num_rows, batch_size)]
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    ds = ray.data.from_arrow(blocks)
    ds = ds.map_batches(decode_batch, fn_kwargs={"size": image_size}, batch_size=batch_size,
                        batch_format="numpy", num_cpus=pool.decode_num_cpus)
    ds = ds.map_batches(actor, fn_constructor_args=args, batch_size=batch_size,
                        batch_format="numpy", compute=ActorPoolStrategy(size=pool.actors),
                        num_cpus=pool.actor_num_cpus, num_gpus=pool.num_gpus)  # Ray Data restarts dead actors
    yield from ds.iter_batches(batch_size=None, batch_format="numpy")


def embed_table(table: pa.Table, spec: ModelSpec, cfg: EmbedConfig, *, image_size: int,
                device: str = "auto") -> Iterator[dict[str, np.ndarray]]:
    """Stream the embedded rows of ``table`` (``id``, ``path`` and pass-through columns) in input order."""
    yield from _images_through_actors(table, _EmbedActor, (spec, device, cfg.torch_threads), cfg, batch_size=cfg.batch_size,
                                      image_size=image_size)


def attack_table(table: pa.Table, spec: ModelSpec, configs: list[tuple[str, float]], pool: EmbedConfig, *,
                 batch_size: int, image_size: int, steps: int = 10, seed: int = 0,
                 device: str = "auto") -> Iterator[dict[str, np.ndarray]]:
    """Stream adversarial rows (see :class:`conceptlens.attacks.Attacker`) of ``table``'s images."""
    yield from _images_through_actors(table, _AttackActor, (spec, configs, steps, seed, device, pool.torch_threads), pool,
                                      batch_size=batch_size, image_size=image_size)


def map_parquet(folder: str, fn: Callable[[dict], dict], *, batch_size: int, num_cpus: float = 0.5,
                columns: list[str] | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Stream ``fn`` (a picklable batch function) applied by Ray Data tasks over a Parquet dataset.

    Batches come back in no particular order; callers aggregate, so memory stays bounded."""
    ds = ray.data.read_parquet(folder, columns=columns)
    ds = ds.map_batches(fn, batch_size=batch_size, batch_format="numpy", num_cpus=num_cpus)
    yield from ds.iter_batches(batch_size=None, batch_format="numpy")
