"""Backpressure: refuse new jobs while the queue is deeper than the configured limit.

One LLEN of each Celery queue list, cached for a tenth of a second and read by one request at a
time (the others use the value cached), so a burst of submissions costs Redis at most ten round
trips a second per gateway process. The limit is approximate by design
(a few jobs may slip in within one cache period); its job is to stop unbounded growth.
"""

from __future__ import annotations

import asyncio
import time

from redis.asyncio import Redis

from shared.errors import QueueUnavailable
from shared.tasks import QUEUES

CACHE_SECONDS = 0.1


class QueueDepth:
    """Knows (roughly) how many messages wait in the queue and refuses work above `limit`."""

    def __init__(self, limit: int, cache_seconds: float = CACHE_SECONDS) -> None:
        self.limit = limit
        self.cache_seconds = cache_seconds
        self._depth = 0
        self._read_at = float("-inf")
        self._reading: asyncio.Task[int] | None = None

    async def current(self, redis: Redis) -> int:
        """The queue's length, read at most once per cache period: the requests that arrive
        while a read is in flight wait for that read instead of each sending their own (under
        load they all found the cache stale at once: 1.8 LLEN per job instead of 0.1)."""
        if time.monotonic() - self._read_at < self.cache_seconds:
            return self._depth
        if self._reading is None:
            self._reading = asyncio.ensure_future(self._read(redis))
            self._reading.add_done_callback(self._read_done)
        # Shielded: one cancelled request must not cancel the read the others wait for.
        return await asyncio.shield(self._reading)

    async def _read(self, redis: Redis) -> int:
        async with redis.pipeline(transaction=False) as pipe:
            for queue in QUEUES:  # every priority: one round trip
                pipe.llen(queue)
            depth = sum(int(n) for n in await pipe.execute())
        self._depth, self._read_at = depth, time.monotonic()
        return depth

    def _read_done(self, task: asyncio.Task[int]) -> None:
        self._reading = None
        if not task.cancelled():
            task.exception()  # retrieved here too, so asyncio does not warn when nobody waits

    async def check(self, redis: Redis) -> None:
        """Raise `QueueUnavailable` (503, Retry-After) when the queue is over its limit."""
        depth = await self.current(redis)
        if depth > self.limit:
            raise QueueUnavailable(
                f"the queue holds {depth} jobs, over its limit of {self.limit}; retry later",
                retry_after=retry_after(depth, self.limit),
                queue_depth=depth,
            )


def retry_after(depth: int, limit: int) -> int:
    """Seconds a client should wait: longer the further the queue is over its limit."""
    return min(60, 2 + 10 * (depth - limit) // max(limit, 1))
