"""No job stays `running` forever: any Redis error while storing an outcome hands the message
back, and the reaper sends again (or fails, after `max_attempts`) what is stuck running."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
from celery.exceptions import Reject
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, RedisError, ResponseError

from shared import csvjobs, jobstore
from shared.tasks import PREDICT_BATCH, QUEUE, SCORE_CHUNK, queue_for
from tests.unit.test_csv import LAYOUT, table, to_csv
from worker.chunk_store import ChunkRecorder
from worker.csv_chunks import score_chunk
from worker.predict import run_batch
from worker.reaper import LOCK, Reaper
from worker.requeue import requeue_if_redis_is_away
from worker.runtime import Runtime

ROW = [0.5] * 10
STORE_ERRORS = [
    ResponseError("OOM command not allowed when used memory > 'maxmemory'."),
    ReadOnlyError("You can't write against a read only replica."),
    RedisConnectionError("Connection refused"),
]


class Sent:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.queues: list[str] = []

    def __call__(self, task: str, message_id: str, kwargs: Any, queue: str) -> None:
        self.calls.append((task, message_id, dict(kwargs)))
        self.queues.append(queue)


def fields(runtime: Runtime, job_id: str, *names: str) -> list[Any]:
    return list(runtime.jobs.redis.hmget(jobstore.job_key(job_id), list(names)))


def json_job(runtime: Runtime, job_id: str, *, rows: bool = True) -> None:
    record = jobstore.new_record(job_id, kind="json", model="demo", n_rows=1)
    if rows:
        record.update(spec="demo:1", rows=orjson.dumps([ROW]).decode())
    runtime.jobs.redis.hset(jobstore.job_key(job_id), mapping=record)


def age(runtime: Runtime, watched: str, member: str, seconds: float = 100) -> None:
    runtime.jobs.redis.zadd(watched, {member: time.time() - seconds})


def reaper(runtime: Runtime, sent: Sent) -> Reaper:
    runtime.jobs.redis.delete(LOCK)
    return Reaper(runtime.jobs.redis, sent, stuck_after=20, max_attempts=3, ttl=60, interval=1)


@pytest.mark.parametrize("error", STORE_ERRORS, ids=type)
def test_any_redis_error_while_storing_an_outcome_requeues_the_message(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, error: RedisError
) -> None:
    json_job(runtime, "j1")

    def refuse(*_: Any, **__: Any) -> None:
        raise error

    monkeypatch.setattr(runtime.jobs, "finish_many", refuse)
    with pytest.raises(Reject) as rejected, requeue_if_redis_is_away():
        run_batch(runtime, [{"id": "j1", "rows": [ROW]}], "demo:1")
    assert rejected.value.requeue is True
    # Nothing was recorded as failed, and the job can still be sent again.
    assert fields(runtime, "j1", "status", "rows") == [b"running", orjson.dumps([ROW])]


@pytest.mark.parametrize("error", STORE_ERRORS, ids=type)
def test_any_redis_error_while_storing_a_chunk_requeues_the_message(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, error: RedisError
) -> None:
    redis = runtime.jobs.redis
    record = jobstore.new_record("c1", kind="csv", model="demo", n_rows=None)
    redis.hset(jobstore.job_key("c1"), mapping={**record, "chunks_done": 0, "chunks_total": 1})
    redis.set(csvjobs.in_key("c1", 0), to_csv(table(2)))

    def refuse(*_: Any, **__: Any) -> None:
        raise error

    monkeypatch.setattr(ChunkRecorder, "done", refuse)
    kwargs = csvjobs.task_kwargs("c1", 0, 1, 2, "demo:1", LAYOUT, "fail")
    with pytest.raises(Reject), requeue_if_redis_is_away():
        score_chunk(runtime, **kwargs)
    assert fields(runtime, "c1", "status") == [b"running"]
    assert redis.exists(csvjobs.in_key("c1", 0))  # its data waits for the next delivery


def test_a_job_stuck_running_is_sent_again_then_failed_after_max_attempts(
    runtime: Runtime,
) -> None:
    json_job(runtime, "j1")
    runtime.jobs.start("j1", "demo:1", 1)  # attempt 1, whose outcome is then lost
    age(runtime, jobstore.RUNNING, "j1")
    sent = Sent()
    assert reaper(runtime, sent).sweep() == 1
    assert sent.calls[0][0] == PREDICT_BATCH
    assert sent.calls[0][2] == {"jobs": [{"id": "j1", "rows": [ROW]}], "model": "demo:1"}
    assert sent.queues == [QUEUE]  # a job of normal priority
    assert reaper(runtime, sent).sweep() == 0  # re-sent just now: not stuck yet
    runtime.jobs.start("j1", "demo:1", 1)  # attempts 2 and 3, lost too
    runtime.jobs.start("j1", "demo:1", 1)
    age(runtime, jobstore.RUNNING, "j1")
    assert reaper(runtime, sent).sweep() == 1
    assert len(sent.calls) == 1
    status, error_type, error = fields(runtime, "j1", "status", "error_type", "error")
    assert (status, error_type) == (b"failed", b"TooManyAttempts")
    assert b"started 3 times" in error
    assert runtime.jobs.redis.zscore(jobstore.RUNNING, "j1") is None


@pytest.mark.parametrize("priority", ["high", "low"])
def test_a_stuck_job_is_sent_again_to_its_own_priority_queue(
    runtime: Runtime, priority: str
) -> None:
    json_job(runtime, "j1")
    runtime.jobs.redis.hset(jobstore.job_key("j1"), "priority", priority)
    runtime.jobs.start("j1", "demo:1", 1)
    age(runtime, jobstore.RUNNING, "j1")
    sent = Sent()
    assert reaper(runtime, sent).sweep() == 1
    assert sent.queues == [queue_for(priority)]
    assert sent.queues[0] == {"high": "mlqueue.high", "low": "mlqueue.low"}[priority]


def test_a_job_started_past_max_attempts_fails_instead_of_running(runtime: Runtime) -> None:
    json_job(runtime, "j1")
    assert [runtime.jobs.start("j1", "demo:1", 1) for _ in range(4)] == [
        "running",
        "running",
        "running",
        "failed",
    ]
    # The rows stay on the failed record: a client may retry it (POST /v1/jobs/{id}/retry).
    assert fields(runtime, "j1", "error_type") == [b"TooManyAttempts"]
    assert fields(runtime, "j1", "rows")[0] is not None


def test_a_direct_task_stuck_running_fails_as_lost(runtime: Runtime) -> None:
    runtime.jobs.start("t1", "default", 1)  # a task nobody submitted: no rows kept
    age(runtime, jobstore.RUNNING, "t1")
    sent = Sent()
    assert reaper(runtime, sent).sweep() == 1
    assert sent.calls == []
    assert fields(runtime, "t1", "status", "error_type") == [b"failed", b"JobLost"]


def test_a_finished_job_is_dropped_from_the_watch(runtime: Runtime) -> None:
    json_job(runtime, "j1")
    runtime.jobs.start("j1", "demo:1", 1)
    runtime.jobs.succeed("j1", "1", [5.0])
    runtime.jobs.redis.zadd(jobstore.RUNNING, {"j1": 1.0})  # as if left behind
    assert reaper(runtime, Sent()).sweep() == 0
    assert runtime.jobs.redis.zscore(jobstore.RUNNING, "j1") is None


def test_a_chunk_stuck_running_is_sent_again_then_fails_its_job(runtime: Runtime) -> None:
    redis = runtime.jobs.redis
    record = jobstore.new_record("c1", kind="csv", model="demo", n_rows=None)
    redis.hset(jobstore.job_key("c1"), mapping={**record, "chunks_done": 0, "chunks_sent": 1})
    kwargs = csvjobs.task_kwargs("c1", 0, 1, 2, "demo:1", LAYOUT, "fail")
    redis.set(csvjobs.in_key("c1", 0), to_csv(table(2)))
    redis.set(csvjobs.msg_key("c1", 0), orjson.dumps(kwargs))
    chunks = ChunkRecorder(redis, 60, 3)
    assert chunks.begin("c1", 0) == "running"  # attempt 1, whose result is then lost
    age(runtime, csvjobs.RUNNING_CHUNKS, "c1:0")
    sent = Sent()
    assert reaper(runtime, sent).sweep() == 1
    assert sent.calls == [(SCORE_CHUNK, "c1.0", dict(kwargs))]
    assert chunks.begin("c1", 0) == "running"
    assert chunks.begin("c1", 0) == "running"
    age(runtime, csvjobs.RUNNING_CHUNKS, "c1:0")
    assert reaper(runtime, sent).sweep() == 1
    assert len(sent.calls) == 1
    assert fields(runtime, "c1", "status", "error_type") == [b"failed", b"TooManyAttempts"]
    assert redis.keys(f"{jobstore.job_key('c1')}:*") == []  # its chunk data is gone


def test_a_chunk_begun_past_max_attempts_fails_its_job(runtime: Runtime) -> None:
    redis = runtime.jobs.redis
    record = jobstore.new_record("c1", kind="csv", model="demo", n_rows=None)
    redis.hset(jobstore.job_key("c1"), mapping={**record, "chunks_done": 0, "chunks_sent": 1})
    redis.set(csvjobs.in_key("c1", 0), to_csv(table(2)))
    redis.hset(jobstore.job_key("c1"), "attempts:0", 3)
    kwargs = csvjobs.task_kwargs("c1", 0, 1, 2, "demo:1", LAYOUT, "fail")
    assert score_chunk(runtime, **kwargs) == "failed"
    assert fields(runtime, "c1", "status", "error_type") == [b"failed", b"TooManyAttempts"]
    assert not redis.exists(csvjobs.in_key("c1", 0))


def test_one_worker_reaps_at_a_time(runtime: Runtime) -> None:
    json_job(runtime, "j1")
    runtime.jobs.start("j1", "demo:1", 1)
    age(runtime, jobstore.RUNNING, "j1")
    runtime.jobs.redis.set(LOCK, "1", ex=5)
    sent = Sent()
    assert (
        Reaper(runtime.jobs.redis, sent, stuck_after=20, max_attempts=3, ttl=60, interval=1).sweep()
        == 0
    )
    assert sent.calls == []
