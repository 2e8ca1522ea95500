"""The outbox: a gateway job keeps its rows until started, and a lost message is sent again."""

from __future__ import annotations

import time
from typing import Any

import fakeredis
import orjson
import pytest
from fastapi.testclient import TestClient

from shared import csvjobs, jobstore
from shared.tasks import QUEUES
from tests.unit.conftest import FakePublisher
from worker.chunk_store import ChunkRecorder
from worker.jobs import JobRecorder
from worker.resender import LOCK, Resender

ROW = [0.5] * 10


def fields(redis: fakeredis.FakeRedis, job_id: str, *names: str) -> list[Any]:
    return list(redis.hmget(jobstore.job_key(job_id), list(names)))


def test_a_submitted_job_keeps_its_rows_until_it_ends(
    client: TestClient, publisher: FakePublisher, server: fakeredis.FakeServer
) -> None:
    redis = fakeredis.FakeRedis(server=server)
    publisher.run = False
    job_id = client.post("/v1/jobs", json={"data": [ROW]}).json()["job_id"]
    assert fields(redis, job_id, "spec", "rows") == [b"demo:1", orjson.dumps([ROW])]
    assert redis.zscore(jobstore.PENDING, job_id) is not None
    recorder = JobRecorder(redis, 60, 3)
    recorder.start_many([(job_id, 1)], "demo:1")
    assert redis.zscore(jobstore.PENDING, job_id) is None
    # Running, it keeps them still (`worker.reaper` may have to send it again) ...
    assert fields(redis, job_id, "spec", "rows") == [b"demo:1", orjson.dumps([ROW])]
    assert redis.zscore(jobstore.RUNNING, job_id) is not None
    recorder.finish_many("1", {job_id: [5.0]}, {})
    # ... until it ends.
    assert fields(redis, job_id, "spec", "rows") == [None, None]
    assert redis.zscore(jobstore.RUNNING, job_id) is None


class Sent:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.calls: list[tuple[str, str]] = []
        self.queues: list[str] = []

    def __call__(self, task: str, message_id: str, kwargs: dict[str, Any], queue: str) -> None:
        self.messages.append(kwargs)
        self.calls.append((task, message_id))
        self.queues.append(queue)


def queued(redis: fakeredis.FakeRedis, job_id: str, age: float, status: str = "queued") -> None:
    record = jobstore.new_record(job_id, kind="json", model="demo", n_rows=1)
    record |= {"status": status, "spec": "demo:1", "rows": orjson.dumps([ROW]).decode()}
    redis.hset(jobstore.job_key(job_id), mapping=record)
    redis.zadd(jobstore.PENDING, {job_id: time.time() - age})


@pytest.fixture
def redis() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


def test_a_job_whose_message_was_lost_is_sent_again(redis: fakeredis.FakeRedis) -> None:
    queued(redis, "lost", age=60)
    queued(redis, "young", age=1)
    queued(redis, "started", age=60, status="running")
    queued(redis, "cancelled", age=60, status="cancelled")
    sent = Sent()
    assert Resender(redis, sent, grace=20, interval=1).sweep() == 1
    assert sent.messages == [{"jobs": [{"id": "lost", "rows": [ROW]}], "model": "demo:1"}]
    assert sent.calls[0][0] == "mlqueue.predict_batch"
    # Re-armed: not sent again before another grace period; the others left the outbox.
    assert time.time() - redis.zscore(jobstore.PENDING, "lost") < 5
    assert set(redis.zrange(jobstore.PENDING, 0, -1)) == {b"lost", b"young"}


@pytest.mark.parametrize("queue", QUEUES)
def test_nothing_is_sent_while_messages_wait_in_any_queue(
    redis: fakeredis.FakeRedis, queue: str
) -> None:
    queued(redis, "behind", age=60)
    redis.lpush(queue, b"a message still waiting")
    sent = Sent()
    assert Resender(redis, sent, grace=20, interval=1).sweep() == 0
    assert sent.messages == []


def test_a_lost_job_is_sent_again_to_the_queue_of_its_priority(
    redis: fakeredis.FakeRedis,
) -> None:
    queued(redis, "urgent", age=60)
    redis.hset(jobstore.job_key("urgent"), "priority", "high")
    queued(redis, "plain", age=60)
    sent = Sent()
    assert Resender(redis, sent, grace=20, interval=1).sweep() == 2
    assert sorted(sent.queues) == ["mlqueue", "mlqueue.high"]


def test_one_worker_sweeps_at_a_time(redis: fakeredis.FakeRedis) -> None:
    queued(redis, "lost", age=60)
    redis.set(LOCK, "1", ex=5)
    sent = Sent()
    assert Resender(redis, sent, grace=20, interval=1).sweep() == 0
    assert sent.messages == []


def chunk_sent(
    redis: fakeredis.FakeRedis, job_id: str, index: int, age: float, status: str
) -> None:
    redis.hset(jobstore.job_key(job_id), mapping={"status": status, "kind": "csv"})
    kwargs = {"job_id": job_id, "index": index, "rows": 100}
    redis.set(csvjobs.msg_key(job_id, index), orjson.dumps(kwargs))
    redis.zadd(csvjobs.PENDING_CHUNKS, {csvjobs.pending_member(job_id, index): time.time() - age})


def test_a_csv_chunk_whose_message_was_lost_is_sent_again(redis: fakeredis.FakeRedis) -> None:
    chunk_sent(redis, "csv1", 7, age=60, status="running")
    chunk_sent(redis, "csv2", 0, age=60, status="cancelled")
    chunk_sent(redis, "csv3", 1, age=1, status="running")
    sent = Sent()
    assert Resender(redis, sent, grace=20, interval=1).sweep() == 1
    assert sent.calls == [("mlqueue.score_chunk", "csv1.7")]
    assert sent.messages == [{"job_id": "csv1", "index": 7, "rows": 100}]
    assert set(redis.zrange(csvjobs.PENDING_CHUNKS, 0, -1)) == {b"csv1:7", b"csv3:1"}


def test_a_chunk_that_began_leaves_the_outbox_for_the_running_set(
    redis: fakeredis.FakeRedis,
) -> None:
    chunk_sent(redis, "csv1", 2, age=60, status="running")
    assert ChunkRecorder(redis, 60, 3).begin("csv1", 2) == "running"
    assert redis.zscore(csvjobs.PENDING_CHUNKS, "csv1:2") is None
    # Its task's arguments stay until it is scored, for `worker.reaper`.
    assert redis.zscore(csvjobs.RUNNING_CHUNKS, "csv1:2") is not None
    assert redis.get(csvjobs.msg_key("csv1", 2)) is not None
