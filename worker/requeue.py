"""What a task does when Redis goes away in the middle of it: hand its message back."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from celery.exceptions import Reject
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError


@contextmanager
def requeue_if_redis_is_away() -> Iterator[None]:
    """Turn a Redis connection error into a requeue of the message.

    A failure would ack the message and lose the job, and a Celery retry needs the broker that
    just went away. Rejecting with requeue hands the message back (or, if Redis is still down,
    leaves it unacknowledged until the visibility timeout); the job store's sticky states and
    the per-chunk bookkeeping make the second run safe.

    `NoScriptError` is the same event seen later: Redis restarted under a pipeline, and
    redis-py's retry re-sent its EVALSHAs to the new server, whose script cache is empty (seen
    in the `docker restart redis` drill: the job stayed running). The next run loads them.
    """
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, NoScriptError) as exc:
        raise Reject(f"Redis unavailable: {type(exc).__name__}", requeue=True) from exc
