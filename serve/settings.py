"""The ``serve`` section of the configuration: how ``conceptlens serve`` runs the runtime filter.

Temporary home: this dataclass moves to ``conceptlens.config`` as ``Config.serve``; until then
:func:`serve_settings` finds it on a Config (``cfg.serve``) or falls back to the defaults.
Plain dataclass, no imports beyond typing, so that the move is a cut and paste.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional


@dataclass
class ServeConfig:
    bundle: Optional[str] = None  # a bundle folder or models:/name@alias; None = <run.root>/<run.name>/monitor/bundle
    host: str = "127.0.0.1"  # HTTP bind address of `conceptlens serve` (0.0.0.0 only behind auth and a proxy)
    port: int = 8000
    min_replicas: int = 1  # model replicas, autoscaled between min and max
    max_replicas: int = 2
    target_ongoing_requests: float = 8.0  # per model replica; the autoscaler adds replicas above it
    max_ongoing_requests: int = 32  # per model replica; caps the batch size, so keep it >= max_batch_size
    max_batch_size: int = 16  # images per model call (dynamic batching across requests)
    batch_wait_timeout_s: float = 0.01  # how long a partial batch waits for more images
    num_cpus: float = 1.0  # per model replica
    num_gpus: float = 0.0  # per model replica; 1 (or a fraction) on a GPU cluster
    max_request_bytes: int = 10 * 2**20  # larger bodies get 413
    max_image_pixels: int = 4096 * 4096  # width x height read from the header, before decoding; larger get 413
    max_images: int = 64  # images per request
    token_env: str = "CONCEPTLENS_TOKEN"  # env var holding the bearer token; unset = no auth (a warning is logged)
    thresholds: Dict[str, float] = field(default_factory=dict)  # misclassified / adversarial; {} = the bundle's
    top_concepts: int = 3  # concepts named per answer


def serve_settings(cfg) -> ServeConfig:
    """``cfg.serve`` when the Config schema has it, else the defaults."""
    return getattr(cfg, "serve", None) or ServeConfig()
