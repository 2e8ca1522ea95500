"""Backpressure: refuse new jobs while the queue is deeper than the configured limit.

One LLEN of the Celery queue list, cached for a tenth of a second, so a burst of submissions
costs Redis at most ten calls a second per gateway process. The limit is approximate by design
(a few jobs may slip in within one cache period); its job is to stop unbounded growth.
"""

from __future__ import annotations

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

    async def current(self, redis: Redis) -> int:
        """The queue's length, read at most once per cache period."""
        now = time.monotonic()
        if now - self._read_at >= self.cache_seconds:
            async with redis.pipeline(transaction=False) as pipe:
                for queue in QUEUES:  # every priority: one round trip
                    pipe.llen(queue)
                self._depth = sum(int(n) for n in await pipe.execute())
            self._read_at = now
        return self._depth

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
