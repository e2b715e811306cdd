"""While an application starts: one line saying what is pending and why, printed only when it changes.

Serve's own status says a deployment is UPDATING; after 30 s its controller adds that replicas cannot be
scheduled. :func:`pending_line` says it from the first poll, with what a replica asks and what Ray has free,
and :class:`PendingWatcher` prints that line from a thread each time it changes (not every poll).
"""
from __future__ import annotations

import threading
import time
from typing import Callable


def _resources(res: dict) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in sorted(res.items()) if k in ("CPU", "GPU") and v) or "none"


def pending_line(app: str, asks: dict[str, float]) -> str | None:
    """What keeps application ``app`` from running, in one line, or None when it runs (or is not deployed yet).
    ``asks``: the resources one replica asks for (``{"CPU": 1.0}``)."""
    import ray
    from ray import serve

    status = serve.status().applications.get(app)
    if status is None:
        return f"application {app} not deployed yet"
    if str(status.status).endswith("RUNNING"):
        return None
    parts = []
    for name, d in status.deployments.items():
        if str(d.status).endswith("HEALTHY"):
            continue
        states = {str(k).rsplit(".", 1)[-1]: v for k, v in d.replica_states.items() if v}
        replicas = ", ".join(f"{v} {k.lower()}" for k, v in sorted(states.items())) or "no replica yet"
        parts.append(f"{name} {str(d.status).rsplit('.', 1)[-1].lower()} ({replicas})")
        if d.message and "scheduled" in d.message:
            parts[-1] += ": replicas cannot be scheduled"
    free = ray.available_resources()
    enough = all(free.get(k, 0.0) + 1e-9 >= v for k, v in asks.items() if v)
    why = (f"a replica asks {_resources(asks)}, Ray has {_resources(free)} free of {_resources(ray.cluster_resources())}"
           + ("" if enough else ": not enough for another replica"))
    return f"waiting for {'; '.join(parts) or status.status}; {why}"


class PendingWatcher:
    """A thread that polls :func:`pending_line` every ``every`` s and passes it to ``say`` when it changes; as a
    context manager it runs for the ``with`` block."""

    def __init__(self, app: str, asks: dict[str, float], say: Callable[[str], None], every: float = 2.0):
        self.app, self.asks, self.say, self.every = app, asks, say, every
        self.start, self._stop, self.last = time.monotonic(), threading.Event(), None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                line = pending_line(self.app, self.asks)
            except Exception:  # the controller is still starting: nothing to say yet
                continue
            if line and line != self.last:
                self.say(f"serve: {line} (+{time.monotonic() - self.start:.0f} s)")
            self.last = line

    def __enter__(self) -> "PendingWatcher":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
