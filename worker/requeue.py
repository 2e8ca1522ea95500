"""What a task does when Redis goes away in the middle of it: hand its message back."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from celery.exceptions import Reject

from worker.failures import hand_back


@contextmanager
def requeue_if_redis_is_away() -> Iterator[None]:
    """Turn a Redis connection error (or results no replica confirmed) into a requeue.

    A failure would ack the message and lose the job, and a Celery retry needs the broker that
    just went away. Rejecting with requeue hands the message back (or, if Redis is still down,
    leaves it unacknowledged until the visibility timeout); the job store's sticky states and
    the per-chunk bookkeeping make the second run safe.
    """
    try:
        yield
    except Exception as exc:
        if not hand_back(exc):
            raise
        raise Reject(f"Redis unavailable: {type(exc).__name__}", requeue=True) from exc
