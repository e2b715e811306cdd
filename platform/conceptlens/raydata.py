"""The Ray Data adapter: the one library module that imports Ray.

Decoding runs as CPU tasks, the models in an actor pool (GPUs per actor from config); the
output streams back in input order so the caller can write deterministic shards.
"""
from __future__ import annotations

import os
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import ray
from ray.data import ActorPoolStrategy

from conceptlens.config import EmbedConfig, RayConfig
from conceptlens.embedding import Embedder, ModelSpec, decode_batch


def init_ray(cfg: RayConfig) -> None:
    """Connect to ``ray.address`` / ``RAY_ADDRESS`` if given, else start a small local Ray."""
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

    def __init__(self, spec: ModelSpec, device: str):
        self.embedder = Embedder(spec, device)
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self.embedder(batch)
        out["node_id"] = np.array([self.node] * len(out["id"]), dtype=object)
        return out


def embed_table(table: pa.Table, spec: ModelSpec, cfg: EmbedConfig, *, image_size: int,
                device: str = "auto") -> Iterator[dict[str, np.ndarray]]:
    """Stream the embedded rows of ``table`` (``id``, ``path`` and pass-through columns) in input order."""
    blocks = [table.slice(i, cfg.batch_size) for i in range(0, table.num_rows, cfg.batch_size)]
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ds = ray.data.from_arrow(blocks)
    ds = ds.map_batches(decode_batch, fn_kwargs={"size": image_size}, batch_size=cfg.batch_size,
                        batch_format="numpy", num_cpus=cfg.decode_num_cpus)
    ds = ds.map_batches(_EmbedActor, fn_constructor_args=(spec, device), batch_size=cfg.batch_size,
                        batch_format="numpy", compute=ActorPoolStrategy(size=cfg.actors),
                        num_cpus=cfg.actor_num_cpus, num_gpus=cfg.num_gpus)  # Ray Data restarts dead actors
    yield from ds.iter_batches(batch_size=None, batch_format="numpy")


def map_parquet(folder: str, fn: Callable[[dict], dict], *, batch_size: int, num_cpus: float = 0.5,
                columns: list[str] | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Stream ``fn`` (a picklable batch function) applied by Ray Data tasks over a Parquet dataset.

    Batches come back in no particular order; callers aggregate, so memory stays bounded."""
    ds = ray.data.read_parquet(folder, columns=columns)
    ds = ds.map_batches(fn, batch_size=batch_size, batch_format="numpy", num_cpus=num_cpus)
    yield from ds.iter_batches(batch_size=None, batch_format="numpy")
