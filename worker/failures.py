"""What became of a job whose work raised: one mapping from an exception to a job failure.

Every task body (`worker.predict`, `worker.csv_chunks`) records a failure through `classify`
and ends the task through `reraise`, so the stored error type and message of a job, and
the exception its task ends with, never depend on which path the job took.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from celery.exceptions import SoftTimeLimitExceeded
from redis.exceptions import RedisError

from shared.errors import ServiceError
from shared.replication import redis_is_away

log = logging.getLogger(__name__)

TIME_LIMIT = "TimeLimitExceeded"


class PredictionFailed(ServiceError):
    """Raised when the model itself raised on valid rows."""


@dataclass(frozen=True)
class JobFailure:
    """A job's error as stored in its record; `retryable` when the job must not fail for it."""

    type: str
    message: str
    retryable: bool = False

    @property
    def stored(self) -> tuple[str, str]:
        """(type, message), as the job store takes them."""
        return self.type, self.message


def ran_or_handed_back(body: Callable[[], None], what: str, extra: Mapping[str, Any]) -> bool:
    """Run a batch's `body`; True if Redis failed under it and every message of the batch must
    be handed back (logged, naming `what`), False once it ran; any other error is raised."""
    try:
        body()
    except Exception as exc:
        if not hand_back(exc):
            raise
        log.warning(
            f"{what} handed back: Redis unavailable",
            extra={**extra, "error_type": type(exc).__name__},
        )
        return True
    return False


def hand_back(exc: BaseException) -> bool:
    """Whether the task must hand its message back rather than fail its job: Redis is away
    (`shared.replication.redis_is_away`), or the soft time limit struck while the task was
    waiting for Redis to come back (a failover outlasting its retries), not while it worked."""
    if _store_failed(exc):
        return True
    waited = exc.__context__
    return isinstance(exc, SoftTimeLimitExceeded) and waited is not None and _store_failed(waited)


def _store_failed(exc: BaseException) -> bool:
    # Any Redis error (OOM under noeviction, READONLY after a failover, ...) is the store's
    # fault, not the job's; `redis_is_away` adds what a Sentinel failover looks like.
    return isinstance(exc, RedisError) or redis_is_away(exc)


def classify(exc: BaseException, *, context: str = "") -> JobFailure:
    """The failure `exc` means for a job; `context` names the work that ran out of time."""
    if hand_back(exc):
        # The job store failed (gone, out of memory, read-only, cannot replicate), not the job:
        # `worker.requeue` hands the message back.
        return JobFailure(type(exc).__name__, str(exc), retryable=True)
    if isinstance(exc, ServiceError):
        return JobFailure(type(exc).__name__, exc.message)
    if isinstance(exc, SoftTimeLimitExceeded):
        return JobFailure(TIME_LIMIT, f"{context or 'the prediction'} exceeded its time limit")
    # The model raised on rows that passed validation: fail this job, keep serving others.
    return JobFailure(PredictionFailed.__name__, f"{type(exc).__name__}: {exc}")


def task_error(exc: Exception, failure: JobFailure) -> Exception:
    """What the task ends with once `failure` is recorded: service errors, time limits and
    retryable errors as they are; anything else the model raised becomes `PredictionFailed`,
    so the task's state names what the job record says."""
    if isinstance(exc, ServiceError | SoftTimeLimitExceeded) or failure.retryable:
        return exc
    return PredictionFailed(failure.message)


def reraise(exc: Exception, failure: JobFailure) -> NoReturn:
    """End the task with `task_error`."""
    error = task_error(exc, failure)
    if error is exc:
        raise exc
    raise error from exc
