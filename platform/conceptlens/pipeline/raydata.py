"""The Ray Data adapter: the one library module that imports Ray (and nothing of the methods).

Decoding runs as CPU tasks, the models in an actor pool (GPUs per actor from config); the
output streams back in input order so the caller can write deterministic shards.
"""
from __future__ import annotations

import functools
import logging
import os
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import ray
import torch
from ray.data import ActorPoolStrategy

from conceptlens.config import EmbedConfig, RayConfig
from conceptlens.models import Embedder, ModelSpec, decode_batch


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


class _ModelActor:
    """Builds ``factory()`` once per actor (models load once, on the actor's device) and applies it to every
    batch; with ``tag_node`` each row gets the id of the node that computed it (``node_id``)."""

    def __init__(self, factory: Callable[[], Callable[[dict], dict]], threads: int = 0, tag_node: bool = False):
        if threads:
            torch.set_num_threads(threads)
        self.fn = factory()
        self.node = ray.get_runtime_context().get_node_id() if tag_node else None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self.fn(batch)
        if self.node:
            out["node_id"] = np.array([self.node] * len(out["id"]), dtype=object)
        return out


def map_images(table: pa.Table, factory: Callable[[], Callable[[dict], dict]], pool: EmbedConfig, *,
               batch_size: int, image_size: int, tag_node: bool = False) -> Iterator[dict[str, np.ndarray]]:
    """Decode ``table``'s images (``path``) in CPU tasks, run the batches through a pool of actors that each
    build ``factory()`` (a picklable callable returning a batch function, e.g. a model), stream in input order."""
    blocks = [table.slice(i, batch_size) for i in range(0, table.num_rows, batch_size)]
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    ds = ray.data.from_arrow(blocks)
    ds = ds.map_batches(decode_batch, fn_kwargs={"image_size": image_size}, batch_size=batch_size,
                        batch_format="numpy", num_cpus=pool.decode_num_cpus)
    ds = ds.map_batches(_ModelActor, fn_constructor_args=(factory, pool.torch_threads, tag_node),
                        batch_size=batch_size, batch_format="numpy", compute=ActorPoolStrategy(size=pool.actors),
                        num_cpus=pool.actor_num_cpus, num_gpus=pool.num_gpus)  # Ray Data restarts dead actors
    yield from ds.iter_batches(batch_size=None, batch_format="numpy")


def embed_table(table: pa.Table, spec: ModelSpec, cfg: EmbedConfig, *, image_size: int,
                device: str = "auto") -> Iterator[dict[str, np.ndarray]]:
    """Stream the embedded rows of ``table`` (``id``, ``path`` and pass-through columns) in input order."""
    yield from map_images(table, functools.partial(Embedder, spec, device), cfg, batch_size=cfg.batch_size,
                          image_size=image_size, tag_node=True)


def map_texts(texts: list[str], factory: Callable[[], Callable[[dict], dict]], pool: EmbedConfig, *,
              batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """``texts`` (with their ``index``) through a pool of actors that each build ``factory()`` (e.g. a
    :class:`~conceptlens.models.TextEmbedder`), streamed in input order."""
    yield from map_rows(pa.table({"index": np.arange(len(texts)), "text": texts}), factory, pool,
                        batch_size=batch_size)


def map_rows(table: pa.Table, factory: Callable[[], Callable[[dict], dict]], pool: EmbedConfig, *,
             batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """The rows of ``table`` through a pool of actors that each build ``factory()`` once (models load once, a
    GPU per actor when ``pool.num_gpus`` says so), streamed in input order."""
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    ds = ray.data.from_arrow([table.slice(i, batch_size) for i in range(0, table.num_rows, batch_size)])
    ds = ds.map_batches(_ModelActor, fn_constructor_args=(factory, pool.torch_threads, False), batch_size=batch_size,
                        batch_format="numpy", compute=ActorPoolStrategy(size=pool.actors),
                        num_cpus=pool.actor_num_cpus, num_gpus=pool.num_gpus)
    yield from ds.iter_batches(batch_size=None, batch_format="numpy")


def map_parquet(folder: str, fn: Callable[[dict], dict], *, batch_size: int, num_cpus: float = 0.5,
                columns: list[str] | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Stream ``fn`` (a picklable batch function) applied by Ray Data tasks over a Parquet dataset.

    Batches come back in no particular order; callers aggregate, so memory stays bounded. ``columns``: the ones
    ``fn`` reads (the rest of the table is never loaded)."""
    ds = ray.data.read_parquet(folder)
    if columns is not None:
        ds = ds.select_columns(columns)  # pushed down into the read
    ds = ds.map_batches(fn, batch_size=batch_size, batch_format="numpy", num_cpus=num_cpus)
    yield from ds.iter_batches(batch_size=None, batch_format="numpy")


def put(value) -> "ray.ObjectRef":
    """``value`` in the object store, shared by every task that takes the returned reference."""
    return ray.put(value)


def submit(fn: Callable, *args, num_cpus: float = 1.0, retries: int = 2, **kwargs) -> "ray.ObjectRef":
    """Run ``fn(*args, **kwargs)`` as a Ray task (arguments may be object references, resolved before it runs;
    a task whose worker dies is retried ``retries`` times)."""
    return ray.remote(num_cpus=num_cpus, max_retries=retries)(fn).remote(*args, **kwargs)


def completed(refs: list) -> Iterator[tuple[int, object]]:
    """``(position, result)`` of each task in ``refs`` as it finishes."""
    position = {ref: i for i, ref in enumerate(refs)}
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        yield position[done[0]], ray.get(done[0])


def fetch(ref: "ray.ObjectRef"):
    """The value behind an object reference."""
    return ray.get(ref)
