"""Sending task messages to the broker, behind a small protocol so that tests can pass a fake.

The gateway writes Celery's own messages (protocol 2, in kombu's Redis envelope) straight onto
the queue's list with its asyncio Redis client: the bytes `Celery.send_task` would write, minus
kombu's synchronous publish. That publish had to run in a thread and cost, with the hand-off,
a third of a gateway process's CPU at a few hundred one-job messages per second (py-spy, open
loop at 300 jobs/s): more than answering the HTTP request. Workers, `celery inspect` and any
other consumer see ordinary Celery messages; `tests/unit/test_publisher.py` holds them against
what the installed Celery writes, field by field.

The mapping of broker errors to `QueueUnavailable` (a 503) lives here once, for the
micro-batches of JSON jobs, the chunks of CSV jobs and model verifications alike.
"""

from __future__ import annotations

import base64
import os
import socket
import uuid
from collections.abc import Mapping
from typing import Any, Final, Protocol

import orjson
from redis.exceptions import RedisError

from gateway.autopipe import AutoPipeline
from shared import tracing
from shared.errors import QueueUnavailable
from shared.tasks import QUEUE

# What a plain `send_task` embeds: no callbacks, no chain, no chord.
EMBED: Final = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


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

    def encoded(
        self,
        task: str,
        message_id: str,
        kwargs: Mapping[str, Any],
        summary: str,
        queue: str = QUEUE,
    ) -> bytes | None:
        """The message `send` would push to `queue`'s list, for a caller that pushes it with
        its own write; None when it must go through `send`."""


def task_message(
    task: str,
    task_id: str,
    kwargs: Mapping[str, Any],
    summary: str,
    queue: str,
    origin: str,
    reply_to: str,
    trace: Mapping[str, str] | None = None,
) -> bytes:
    """One task message as kombu's Redis transport stores it in a queue's list.

    `ignore_result`: the job store holds every outcome (a result-backend entry per message would
    be written for nobody). `argsrepr`/`kwargsrepr`: monitoring tools show `summary`, never the
    rows. Priority 0 and the anonymous exchange: the message goes to the list named `queue`
    (mlqueue's priorities are queues of their own, `shared.tasks.queue_for`). `trace`: the W3C
    context the worker's Celery instrumentation continues (a header, as OpenTelemetry's
    instrumentation of `send_task` puts it).
    """
    body = orjson.dumps([[], kwargs, EMBED])
    headers: dict[str, Any] = {
        "lang": "py",
        "task": task,
        "id": task_id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": task_id,
        "parent_id": None,
        "argsrepr": "()",
        "kwargsrepr": summary,
        "origin": origin,
        "ignore_result": True,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
        **(trace or {}),
    }
    properties = {
        "correlation_id": task_id,
        "reply_to": reply_to,
        "argsrepr": "()",
        "kwargsrepr": summary,
        "delivery_mode": 2,  # persistent
        "delivery_info": {"exchange": "", "routing_key": queue},
        "priority": 0,
        "body_encoding": "base64",
        "delivery_tag": str(uuid.uuid4()),
    }
    return orjson.dumps(
        {
            "body": base64.b64encode(body).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": properties,
        }
    )


class BrokerPublisher:
    """Task messages pushed by the gateway's Redis client, auto-pipelined with its other
    commands (`commands`, shared with the job store): concurrent sends share a round trip."""

    def __init__(self, commands: AutoPipeline) -> None:
        self.commands = commands
        self.origin = f"gen{os.getpid()}@{socket.gethostname()}"  # as Celery names a sender
        self.reply_to = str(uuid.uuid4())  # Celery's per-app id; no reply is ever sent to it

    async def send(
        self,
        task: str,
        message_id: str,
        kwargs: Mapping[str, Any],
        summary: str,
        queue: str = QUEUE,
    ) -> None:
        """LPUSH, as kombu does: consumers pop from the right, oldest first."""
        if tracing.ON:  # the span OpenTelemetry's Celery instrumentation would make, same name
            attributes: tracing.Attributes = {
                "celery.action": "apply_async",
                "celery.task_name": task,
                "messaging.message.id": message_id,
                "messaging.destination": queue,
            }
            with tracing.span(f"apply_async/{task}", attributes):
                trace = {k: v for k, v in tracing.carrier().items() if k != tracing.ENQUEUED}
                await self._push(task, message_id, kwargs, summary, queue, trace)
        else:
            await self._push(task, message_id, kwargs, summary, queue)

    def encoded(
        self,
        task: str,
        message_id: str,
        kwargs: Mapping[str, Any],
        summary: str,
        queue: str = QUEUE,
    ) -> bytes | None:
        """The message `send` would push, for a caller that pushes it with its own write (the
        jobs' records, in one round trip); None while tracing is on: the message then carries
        the context of the span `send` makes around its push."""
        if tracing.ON:
            return None
        return task_message(task, message_id, kwargs, summary, queue, self.origin, self.reply_to)

    async def _push(
        self,
        task: str,
        message_id: str,
        kwargs: Mapping[str, Any],
        summary: str,
        queue: str,
        trace: Mapping[str, str] | None = None,
    ) -> None:
        data = task_message(
            task, message_id, kwargs, summary, queue, self.origin, self.reply_to, trace
        )
        try:
            await self.commands.execute("LPUSH", queue, data)
        except (RedisError, OSError) as exc:
            raise QueueUnavailable("the job queue is unavailable; retry shortly") from exc
