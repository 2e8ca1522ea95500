"""What a task does when Redis goes away in the middle of it: hand its message back."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from celery.exceptions import Reject

from worker.failures import hand_back


@contextmanager
def requeue_if_redis_is_away() -> Iterator[None]:
    """Turn any Redis error (or results no replica confirmed) into a requeue of the message.

    Not only a lost connection: a Redis out of memory under `noeviction` (OOM) or a replica
    promoted away (READONLY) refuses the write of an outcome just the same. A failure would ack
    the message and leave the job `running` with nothing to finish it, and a Celery retry needs
    the broker that just failed. Rejecting with requeue hands the message back (or, if Redis
    still refuses, leaves it unacknowledged until the visibility timeout; `worker.reaper` is the
    net below that); the job store's sticky states, the per-chunk bookkeeping and the attempt
    count (`max_attempts`) make the next runs safe and bounded. A `NoScriptError` is one case:
    Redis restarted under a pipeline and redis-py's retry re-sent its EVALSHAs to a server whose
    script cache is empty (seen in the `docker restart redis` drill).
    """
    try:
        yield
    except Exception as exc:
        if not hand_back(exc):
            raise
        raise Reject(f"Redis unavailable: {type(exc).__name__}", requeue=True) from exc
