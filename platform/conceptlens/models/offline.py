"""Fail fast instead of hanging when weights would have to come from the network."""
from __future__ import annotations

import socket

PROBE_TIMEOUT_S = 3.0


def reachable(host: str, port: int = 443, timeout: float | None = None) -> bool:
    """Whether a TCP connection to ``host:port`` opens within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S if timeout is None else timeout):
            return True
    except OSError:
        return False
