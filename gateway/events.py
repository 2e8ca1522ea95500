"""Wakes long polls when jobs finish: one pub/sub subscription per gateway process.

A small success arrives with its answer (`shared.jobstore.Announced`): the waiter can answer
without reading the job back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Iterator

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.jobstore import EVENTS, Announced, ended

log = logging.getLogger(__name__)


class JobEnded(asyncio.Event):
    """Set when the job ends (or changes, for event streams); `announced` holds its answer when
    the message carried it."""

    announced: Announced | None = None


class JobEvents:
    """Fans job-finished messages out to the requests waiting on those jobs."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._waiters: defaultdict[str, set[JobEnded]] = defaultdict(set)
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
    def subscription(self, job_id: str) -> Iterator[JobEnded]:
        """An event set when `job_id` finishes, for the duration of the block."""
        event = JobEnded()
        self._waiters[job_id].add(event)
        try:
            yield event
        finally:
            waiters = self._waiters[job_id]
            waiters.discard(event)
            if not waiters:
                del self._waiters[job_id]

    def _notify(self, job_id: str, announced: Announced | None) -> None:
        for event in self._waiters.get(job_id, ()):
            if announced is not None:  # a repeated wake-up does not forget the answer
                event.announced = announced
            event.set()

    async def _listen(self) -> None:
        while True:
            try:
                async with self.redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(EVENTS)
                    while True:
                        message = await pubsub.get_message(timeout=1.0)
                        if message is not None:
                            for job_id, announced in ended(message["data"]):
                                self._notify(job_id, announced)
            except (RedisError, OSError) as exc:
                # Waiters fall back to re-reading the store every second until we are back.
                log.warning("job events unavailable, retrying: %s", exc)
                await asyncio.sleep(1.0)
