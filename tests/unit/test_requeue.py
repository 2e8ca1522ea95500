"""A task that meets Redis going away, in any of its guises, hands its message back."""

from __future__ import annotations

import pytest
from celery.exceptions import Reject
from redis.exceptions import ConnectionError, NoScriptError, ResponseError, TimeoutError

from worker.requeue import requeue_if_redis_is_away


@pytest.mark.parametrize(
    "error",
    [
        ConnectionError("Connection refused"),
        TimeoutError("Timeout reading from socket"),
        NoScriptError("No matching script. Please use EVAL."),  # Redis restarted mid-pipeline
    ],
)
def test_redis_away_requeues_the_message(error: Exception) -> None:
    with pytest.raises(Reject) as rejected, requeue_if_redis_is_away():
        raise error
    assert rejected.value.requeue is True
    assert type(error).__name__ in str(rejected.value.reason)


def test_other_redis_errors_are_failures_not_requeues() -> None:
    with pytest.raises(ResponseError), requeue_if_redis_is_away():
        raise ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")
