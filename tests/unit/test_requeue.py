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


def test_any_redis_error_requeues_but_a_models_error_does_not() -> None:
    # Issue 11: any error of the job store (OOM, READONLY, ...) is the store's, not the job's;
    # the attempt count bounds how often such a message comes back.
    with pytest.raises(Reject), requeue_if_redis_is_away():
        raise ResponseError("OOM command not allowed when used memory > 'maxmemory'")
    with pytest.raises(ValueError, match="negative input"), requeue_if_redis_is_away():
        raise ValueError("negative input")
