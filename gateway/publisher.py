"""Sending task messages to the broker, behind a small protocol so that tests can pass a fake.

The retry policy and the mapping of broker errors to `QueueUnavailable` (a 503) live here once,
for the micro-batches of JSON jobs and the chunks of CSV jobs alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from celery import Celery
from kombu.exceptions import OperationalError
from starlette.concurrency import run_in_threadpool

from shared.errors import QueueUnavailable
from shared.tasks import QUEUE

# Fail fast when the broker is away: the client gets a 503 and retries, the gateway never hangs.
PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2, "interval_max": 0.5}


class Publisher(Protocol):
    """Sends one task message; raises `QueueUnavailable` when the broker cannot take it."""

    async def send(
        self,
        task: str,
        message_id: str,
        kwargs: Mapping[str, Any],
        summary: str,
        queue: str = QUEUE,
    ) -> None:
        """Send `task` with `kwargs` as message `message_id` to `queue` (its priority);
        `summary` stands in for the arguments wherever Celery would show them."""


class CeleryPublisher:
    """The broker through Celery's `send_task`, by task name (the gateway imports no worker)."""

    def __init__(self, celery: Celery) -> None:
        self.celery = celery

    async def send(
        self,
        task: str,
        message_id: str,
        kwargs: Mapping[str, Any],
        summary: str,
        queue: str = QUEUE,
    ) -> None:
        """Publish off the event loop: kombu publishes synchronously."""
        try:
            await run_in_threadpool(
                self.celery.send_task,
                task,
                kwargs=kwargs,
                task_id=message_id,
                queue=queue,
                # Celery would otherwise build a repr of every row for its message headers: CPU
                # spent for nothing, and row data shown in monitoring tools.
                argsrepr="()",
                kwargsrepr=summary,
                retry=True,
                retry_policy=PUBLISH_RETRY,
                # The job store holds every outcome; without this, Celery's Redis result backend
                # subscribed to each message's result channel and unsubscribed again (two more
                # round trips per message) for a result nobody reads.
                ignore_result=True,
            )
        except (OperationalError, OSError) as exc:
            raise QueueUnavailable("the job queue is unavailable; retry shortly") from exc

    def close(self) -> None:
        """Release the broker connections."""
        self.celery.close()
