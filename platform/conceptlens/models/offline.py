"""Fail fast instead of hanging when weights would have to come from the network."""
from __future__ import annotations

import contextlib
import os
import socket
from typing import Iterator

PROBE_TIMEOUT_S = 3.0
# Send every probe to this (host, port) instead: tests point it at an unreachable address so the
# offline code paths run for real on machines that do have a network.
PROBE_OVERRIDE: tuple[str, int] | None = None


def reachable(host: str, port: int = 443, timeout: float | None = None) -> bool:
    """Whether a TCP connection to ``host:port`` opens within ``timeout`` (default ``PROBE_TIMEOUT_S``) seconds."""
    address = PROBE_OVERRIDE or (host, port)
    try:
        with socket.create_connection(address, timeout=PROBE_TIMEOUT_S if timeout is None else timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """Hugging Face hub offline mode for the block: cached files load, anything else fails at once.

    huggingface_hub reads ``HF_HUB_OFFLINE`` once, at import, so setting the variable is not
    enough; its module constant is switched too.
    """
    from huggingface_hub import constants

    saved_env, saved_flag = os.environ.get("HF_HUB_OFFLINE"), constants.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"], constants.HF_HUB_OFFLINE = "1", True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved_flag
        if saved_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved_env
