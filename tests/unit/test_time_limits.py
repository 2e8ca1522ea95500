"""Time limits in batch messages: a soft limit fails every live job once; a hard limit is
recorded by the worker's main process for every job of the message (or a CSV chunk's job)."""

from __future__ import annotations

from typing import Any

import pytest
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

from tests.unit.test_batching import ROW, outcome, submitted
from worker import celery_app
from worker.predict import run_batch
from worker.runtime import Runtime


class OutOfTime:
    """Raises the soft time limit on every call, and counts the calls."""

    n_features = 10
    calls = 0

    def predict(self, X: Any) -> Any:
        OutOfTime.calls += 1
        raise SoftTimeLimitExceeded()


def test_a_soft_limit_in_a_batch_fails_each_job_and_stops(runtime: Runtime) -> None:
    runtime.models._loader = lambda path: OutOfTime()  # type: ignore[assignment,return-value]
    OutOfTime.calls = 0
    submitted(runtime, "a", "b")
    jobs = [{"id": "a", "rows": [ROW]}, {"id": "b", "rows": [ROW, ROW]}]
    assert run_batch(runtime, jobs, "demo:1") == {"jobs": 2, "succeeded": 0, "failed": 2}
    message = "the prediction exceeded its time limit"
    assert outcome(runtime, "a") == outcome(runtime, "b") == ("failed", message)
    assert OutOfTime.calls == 1  # not started again job by job


@pytest.mark.parametrize(
    ("task_id", "kwargs", "failed"),
    [
        ("m1", {"jobs": [{"id": "a", "rows": [ROW]}, {"id": "b", "rows": [ROW]}]}, ["a", "b"]),
        ("a", {"rows": [ROW], "model": "demo"}, ["a"]),
        ("chunk-message", {"job_id": "b", "index": 3, "rows": 10}, ["b"]),
    ],
)
def test_a_hard_limit_fails_every_job_of_the_message(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, task_id: str, kwargs: Any, failed: list[str]
) -> None:
    monkeypatch.setattr(celery_app, "_recorder", runtime.jobs)
    submitted(runtime, "a", "b")
    celery_app._record_hard_time_limit(
        task_id=task_id, exception=TimeLimitExceeded(10.0), kwargs=kwargs
    )
    limit = celery_app.settings.task_time_limit
    for job_id in failed:
        message = f"the prediction exceeded its hard time limit of {limit} s"
        assert outcome(runtime, job_id) == ("failed", message)
    assert [j for j in ("a", "b") if j not in failed and outcome(runtime, j)[0] != "queued"] == []
    # Other failures are recorded by the task itself: the handler leaves them alone.
    submitted(runtime, "c")
    celery_app._record_hard_time_limit(task_id="c", exception=ValueError("x"), kwargs={})
    assert outcome(runtime, "c")[0] == "queued"


def test_a_channel_whose_connection_is_gone_raises_a_connection_error() -> None:
    from kombu.transport import redis as kombu_redis
    from redis.exceptions import ConnectionError as RedisConnectionError

    from worker import kombu_patch

    kombu_patch.apply()
    kombu_patch.apply()  # idempotent
    assert kombu_redis.Channel._connparams.patched  # type: ignore[attr-defined]

    class Closed:
        connection = None

    class Released:
        class connection:
            client = None

    for channel in (Closed(), Released()):
        # A connection error is what kombu and Celery catch at these call sites (then reconnect).
        with pytest.raises(RedisConnectionError):
            kombu_redis.Channel._connparams(channel)  # type: ignore[arg-type]
    assert RedisConnectionError in kombu_redis.Transport.connection_errors
