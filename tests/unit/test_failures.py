"""One failure path in the worker: an exception becomes one stored error, whatever the job."""

from __future__ import annotations

from typing import Any

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from redis.exceptions import ConnectionError as RedisConnectionError

from shared import csvjobs, jobstore
from shared.errors import ModelError
from tests.unit.test_batching import ROW, outcome, submitted
from tests.unit.test_csv import LAYOUT, table, to_csv
from worker.csv_chunks import score_chunk
from worker.failures import JobFailure, PredictionFailed, classify, reraise
from worker.predict import run_batch, run_job
from worker.runtime import Runtime


@pytest.mark.parametrize(
    ("exc", "context", "expected"),
    [
        (ModelError("sha256 mismatch"), "", JobFailure("ModelError", "sha256 mismatch")),
        (
            SoftTimeLimitExceeded(),
            "",
            JobFailure("TimeLimitExceeded", "the prediction exceeded its time limit"),
        ),
        (
            SoftTimeLimitExceeded(),
            "chunk 3",
            JobFailure("TimeLimitExceeded", "chunk 3 exceeded its time limit"),
        ),
        (ValueError("bad"), "", JobFailure("PredictionFailed", "ValueError: bad")),
        (RedisConnectionError("gone"), "", JobFailure("ConnectionError", "gone", True)),
    ],
)
def test_classify_maps_each_kind_of_exception(
    exc: BaseException, context: str, expected: JobFailure
) -> None:
    assert classify(exc, context=context) == expected


def test_reraise_keeps_service_errors_and_wraps_what_the_model_raised() -> None:
    error = ModelError("untrusted")
    with pytest.raises(ModelError) as kept:
        reraise(error, classify(error))
    assert kept.value is error
    cause = ZeroDivisionError("boom")
    with pytest.raises(PredictionFailed, match="ZeroDivisionError: boom") as wrapped:
        reraise(cause, classify(cause))
    assert wrapped.value.__cause__ is cause


def error(runtime: Runtime, job_id: str) -> object:
    fields = runtime.jobs.redis.hgetall(jobstore.job_key(job_id))
    view = jobstore.to_view(job_id, {k.decode(): v for k, v in fields.items()})
    return view.model_dump()["error"]


class Raising:
    """A model whose predict raises the exception it was built with."""

    n_features = 10

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def predict(self, X: Any) -> Any:
        raise self.exc


def test_a_model_error_is_stored_alike_for_single_batched_and_csv_jobs(runtime: Runtime) -> None:
    runtime.models._loader = lambda path: Raising(KeyError("x"))  # type: ignore[assignment,return-value]
    with pytest.raises(PredictionFailed):
        run_job(runtime, "single", [ROW], "default")
    submitted(runtime, "batched")
    run_batch(runtime, [{"id": "batched", "rows": [ROW]}], "demo:1")
    redis = runtime.jobs.redis
    record = jobstore.new_record("csv", kind="csv", model="demo", n_rows=None)
    redis.hset(jobstore.job_key("csv"), mapping={**record, "chunks_done": 0, "chunks_total": 1})
    redis.set(csvjobs.in_key("csv", 0), to_csv(table(2)))
    with pytest.raises(PredictionFailed):
        score_chunk(runtime, **csvjobs.task_kwargs("csv", 0, 1, 2, "demo:1", LAYOUT, "fail"))
    expected = {"type": "PredictionFailed", "message": "KeyError: 'x'"}
    assert {job_id: error(runtime, job_id) for job_id in ("single", "batched", "csv")} == {
        "single": expected,
        "batched": expected,
        "csv": expected,
    }
    assert outcome(runtime, "batched")[0] == "failed"


def test_a_redis_outage_while_scoring_a_chunk_leaves_the_job_to_a_redelivery(
    runtime: Runtime,
) -> None:
    runtime.models._loader = lambda path: Raising(RedisConnectionError("gone"))  # type: ignore[assignment,return-value]
    redis = runtime.jobs.redis
    record = jobstore.new_record("j", kind="csv", model="demo", n_rows=None)
    redis.hset(jobstore.job_key("j"), mapping={**record, "chunks_done": 0, "chunks_total": 1})
    redis.set(csvjobs.in_key("j", 0), to_csv(table(2)))
    kwargs = csvjobs.task_kwargs("j", 0, 1, 2, "demo:1", LAYOUT, "fail")
    with pytest.raises(RedisConnectionError):  # worker.requeue turns it into a requeue
        score_chunk(runtime, **kwargs)
    assert redis.hget(jobstore.job_key("j"), "status") == b"running"
    runtime.models._loader = lambda path: Raising(ValueError("late"))  # type: ignore[assignment,return-value]
    runtime.models._models.clear()
    with pytest.raises(PredictionFailed):
        score_chunk(runtime, **kwargs)  # the redelivery still finds the chunk's data
    assert error(runtime, "j") == {"type": "PredictionFailed", "message": "ValueError: late"}
