"""Acknowledge the messages of a batch of direct tasks in one Redis round trip.

kombu's Redis transport acknowledges a message by removing it from its `unacked` bookkeeping
(`QoS._remove_from_indices`: a ZREM and an HDEL) in a pipeline of a Redis client it creates for
that one call. Building a redis-py client costs about as much CPU as the rest of a message's
handling in the consumer, and the round trip blocks it. For a batch, every removal goes into one
pipeline instead, sent once all are queued; everything else about the acknowledgement (the
request's and the message's state, kombu's in-memory bookkeeping) takes Celery's usual path.

Should that one write fail (Redis away), the messages stay in `unacked` and come back after the
visibility timeout, as any message whose ack was lost: their results are stored, so the tasks
answer from the store.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from celery.worker.request import Request
from redis.exceptions import RedisError

log = logging.getLogger(__name__)


class _Queued:
    """Stands for a pipeline whose commands are sent later, with the batch's."""

    def execute(self) -> list[Any]:
        return []


def acknowledge(requests: Sequence[Request]) -> None:
    """`Request.acknowledge` for each request, with one Redis write per channel."""
    by_channel: dict[int, tuple[Any, list[Request]]] = {}
    for req in requests:
        channel = getattr(req.message, "channel", None)
        by_channel.setdefault(id(channel), (channel, []))[1].append(req)
    for channel, reqs in by_channel.values():
        qos = getattr(channel, "qos", None)
        remove = getattr(qos, "_remove_from_indices", None)
        if remove is None or len(reqs) == 1:  # not kombu's Redis transport, or nothing to share
            for req in reqs:
                req.acknowledge()
            continue
        _acknowledge_together(qos, remove, reqs)


def _acknowledge_together(qos: Any, remove: Any, reqs: list[Request]) -> None:
    try:
        with qos.pipe_or_acquire() as pipe:
            # For these acknowledgements only (the consumer is single-threaded): queue each
            # removal in the shared pipeline instead of sending it on its own.
            qos._remove_from_indices = lambda tag, _pipe=None: (remove(tag, pipe), _Queued())[1]
            try:
                for req in reqs:
                    req.acknowledge()
            finally:
                del qos._remove_from_indices  # the transport's own method again
            pipe.execute()
    except (RedisError, OSError) as exc:
        log.warning(
            "could not acknowledge a direct batch; its messages return after the visibility "
            "timeout and answer from the store",
            extra={"tasks": len(reqs), "error_type": type(exc).__name__},
        )
