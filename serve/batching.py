"""Dynamic batching of one model function inside a replica's event loop."""
from __future__ import annotations

import asyncio
import collections
import time
from typing import Any, Callable


class Batcher:
    """Dynamic batching of one model function: ``await batcher(x)`` answers ``fn([..., x, ...])[i]``, with
    ``fn`` run in a thread so the event loop keeps taking inputs meanwhile.

    A batch is made when ``fn`` is free: every input waiting then (at most ``max_size``) and, while fewer,
    those that arrive until ``wait_s`` after the oldest one arrived. So a lone input waits ``wait_s`` at most,
    and under load the inputs that arrive while one batch runs make up the next. (``@serve.batch`` closes a
    batch ``wait_s`` after its first input even while the one before still runs, so under load it lines up
    many small batches: 1.4 images on average for 16 concurrent clients on 2 cores.)"""

    def __init__(self, fn: Callable[[list], list], max_size: int = 16, wait_s: float = 0.01):
        self.fn, self.max_size, self.wait_s = fn, max_size, wait_s
        self.waiting: collections.deque = collections.deque()  # (input, future, time.monotonic() of arrival)
        self.arrived: asyncio.Event | None = None  # made in the replica's event loop, with the worker task
        self.worker: asyncio.Task | None = None

    async def __call__(self, item: Any) -> Any:
        if self.worker is None:
            self.arrived = asyncio.Event()
            self.worker = asyncio.create_task(self._serve())
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((item, future, time.monotonic()))
        self.arrived.set()
        return await future

    async def _next_batch(self) -> list[tuple[Any, asyncio.Future]]:
        while not self.waiting:
            self.arrived.clear()
            await self.arrived.wait()
        deadline, batch = self.waiting[0][2] + self.wait_s, []
        while True:
            while self.waiting and len(batch) < self.max_size:
                item, future, _ = self.waiting.popleft()
                if not future.done():  # done = its caller gave up
                    batch.append((item, future))
            left = deadline - time.monotonic()
            if len(batch) >= self.max_size or left <= 0:
                return batch
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), left)
            except asyncio.TimeoutError:
                pass

    async def _serve(self) -> None:
        while True:
            batch = await self._next_batch()
            if not batch:
                continue
            try:
                answers = await asyncio.to_thread(self.fn, [item for item, _ in batch])
            except Exception as err:  # every caller of the batch gets the model's error
                for _, future in batch:
                    if not future.done():
                        future.set_exception(err)
                continue
            for (_, future), answer in zip(batch, answers):
                if not future.done():
                    future.set_result(answer)
