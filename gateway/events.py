"""Wakes long polls when jobs finish: one pub/sub subscription per gateway process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Iterator

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.jobstore import EVENTS

log = logging.getLogger(__name__)


class JobEvents:
    """Fans job-finished messages out to the requests waiting on those jobs."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._waiters: defaultdict[str, set[asyncio.Event]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start listening in the background."""
        self._task = asyncio.create_task(self._listen(), name="mlqueue-job-events")

    async def stop(self) -> None:
        """Stop listening."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @contextlib.contextmanager
    def subscription(self, job_id: str) -> Iterator[asyncio.Event]:
        """An event set when `job_id` finishes, for the duration of the block."""
        event = asyncio.Event()
        self._waiters[job_id].add(event)
        try:
            yield event
        finally:
            waiters = self._waiters[job_id]
            waiters.discard(event)
            if not waiters:
                del self._waiters[job_id]

    def _notify(self, job_id: str) -> None:
        for event in self._waiters.get(job_id, ()):
            event.set()

    async def _listen(self) -> None:
        while True:
            try:
                async with self.redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(EVENTS)
                    while True:
                        message = await pubsub.get_message(timeout=1.0)
                        if message is not None:
                            for job_id in message["data"].decode().split("\n"):
                                self._notify(job_id)
            except (RedisError, OSError) as exc:
                # Waiters fall back to re-reading the store every second until we are back.
                log.warning("job events unavailable, retrying: %s", exc)
                await asyncio.sleep(1.0)
