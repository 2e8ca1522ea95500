"""The gateway's micro-batches coalesced in the worker (`worker.batch_strategy`): which messages
are coalesced, how a batch is sized, and what each job of several messages run together stores
(fakeredis, `MockModel`: row sums)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from shared import jobstore
from shared.tasks import BatchJob
from tests.unit.conftest import CountingLoader
from tests.unit.test_direct_batches import FakeConsumer, FakeRequest
from worker.batch_strategy import GATEWAY, Message, batchable, run_messages
from worker.coalesce import Batcher
from worker.runtime import Runtime

ROW = [0.5] * 10
PLAIN: dict[str, Any] = {"id": "m", "task": "mlqueue.predict_batch"}
MESSAGE = {"jobs": [{"id": "j", "rows": [ROW]}], "model": "demo:1"}


@pytest.mark.parametrize(
    ("payload", "headers", "coalesced"),
    [
        (((), MESSAGE, {}), PLAIN, True),
        (((), {"jobs": [{"id": "j", "rows": "junk"}], "model": "demo"}, None), PLAIN, True),
        (((), {"jobs": [{"id": "j", "rows": [ROW], "trace": {}}], "model": "d"}, {}), PLAIN, True),
        (((), {"jobs": [], "model": "demo"}, {}), PLAIN, False),
        (((), {"jobs": [{"rows": [ROW]}], "model": "demo"}, {}), PLAIN, False),  # no id
        (((), {"jobs": [{"id": 3, "rows": [ROW]}], "model": "demo"}, {}), PLAIN, False),
        (((), {"jobs": "junk", "model": "demo"}, {}), PLAIN, False),
        (((), {"jobs": MESSAGE["jobs"]}, {}), PLAIN, False),  # no model: Celery's TypeError
        (((), {**MESSAGE, "extra": 1}, {}), PLAIN, False),
        (((), {**MESSAGE, "model": 3}, {}), PLAIN, False),
        (([MESSAGE["jobs"], "demo"], {}, {}), PLAIN, False),  # positional
        (((), MESSAGE, {"callbacks": [{"task": "x"}]}), PLAIN, False),
        (((), MESSAGE, {}), {**PLAIN, "eta": "2030-01-01T00:00:00"}, False),
        (((), MESSAGE, {}), {**PLAIN, "timelimit": [1, 2]}, False),
        (((), MESSAGE, {}), {**PLAIN, "traceparent": "00-ab-cd-01"}, False),
    ],
)
def test_only_messages_shaped_as_the_gateway_sends_them_are_coalesced(
    payload: Any, headers: dict[str, Any], coalesced: bool
) -> None:
    assert batchable(payload, headers) is coalesced


class FakeMessage(FakeRequest):
    def __init__(self, n: int, rows: int) -> None:
        super().__init__(n)
        self.kwargs = {"jobs": [{"id": f"j{n}", "rows": [ROW] * rows}], "model": "demo"}


def test_a_free_process_takes_every_message_waiting_up_to_the_row_bound() -> None:
    consumer = FakeConsumer()
    b = Batcher(consumer, 10, 0.0, (5, 7), GATEWAY, max_messages=4)
    first, second = FakeMessage(0, 1), FakeMessage(1, 1)
    b.add(first)  # type: ignore[arg-type]
    b.add(second)  # type: ignore[arg-type]
    # Eager: neither waits for company while a process is free.
    assert [[m["jobs"][0]["id"] for _, m in job["tasks"]] for job in consumer.pool.jobs] == [
        ["j0"], ["j1"],
    ]  # fmt: skip
    for n, rows in enumerate([4, 4, 4, 20], start=2):  # both processes busy: these wait
        b.add(FakeMessage(n, rows))  # type: ignore[arg-type]
    assert len(consumer.pool.jobs) == 2
    consumer.pool.end(0)  # the next batch: as many as fit in 10 rows
    assert [m["jobs"][0]["id"] for _, m in consumer.pool.jobs[2]["tasks"]] == ["j2", "j3"]
    consumer.pool.end(1)  # one of 20 rows past the bound: it goes alone, after j4
    assert [m["jobs"][0]["id"] for _, m in consumer.pool.jobs[3]["tasks"]] == ["j4"]
    consumer.pool.end(2)
    assert [m["jobs"][0]["id"] for _, m in consumer.pool.jobs[4]["tasks"]] == ["j5"]
    # Prefetch is raised per message held (six here, under the bound of 4 x 3 processes + 1)
    # and given back per message acknowledged: four so far.
    assert b.raised == 2 and consumer.qos.value == 2 + 2
    consumer.pool.end(3)
    consumer.pool.end(4)
    assert b.raised == 0 and consumer.qos.value == 2 and b.running == 0
    assert all(m.events == ["accepted", "ack"] for m in [first, second])


def _queued(runtime: Runtime, *jobs: BatchJob) -> None:
    """The records the gateway writes before it sends a message."""
    for job in jobs:
        record = jobstore.new_record(job["id"], kind="json", model="demo", n_rows=1)
        runtime.jobs.redis.hset(jobstore.job_key(job["id"]), mapping=record)


def _result(runtime: Runtime, job_id: str) -> tuple[str, list[float] | None]:
    status = runtime.jobs.redis.hget(jobstore.job_key(job_id), "status")
    return status.decode(), runtime.jobs.stored(job_id)[1]


def test_the_jobs_of_several_messages_run_in_one_model_call_each_with_its_own_answer(
    runtime: Runtime, loader: CountingLoader
) -> None:
    jobs: list[BatchJob] = [{"id": f"j{i}", "rows": [[float(i)] * 10, ROW]} for i in range(4)]
    bad: BatchJob = {"id": "bad", "rows": [ROW[:3]]}
    _queued(runtime, *jobs, bad)
    calls: list[int] = []
    original = runtime.models.get

    def counted(model: str) -> Any:
        calls.append(1)
        return original(model)

    runtime.models.get = counted  # type: ignore[method-assign]
    messages: list[Message] = [
        ("m1", {"jobs": jobs[:2], "model": "demo"}),
        ("m2", {"jobs": [jobs[2], bad], "model": "demo"}),
        ("m3", {"jobs": [jobs[3], jobs[0]], "model": "demo"}),  # j0 again (a redelivery): once
    ]
    assert run_messages(runtime, messages) is False
    for i in range(4):
        assert _result(runtime, f"j{i}") == ("succeeded", [10.0 * i, 5.0])
    assert _result(runtime, "bad")[0] == "failed"  # alone: its neighbours succeeded
    assert len(calls) == 1 and loader.calls == 1
    assert runtime.jobs.redis.hget(jobstore.job_key("j0"), "attempts") == b"1"


def test_messages_for_two_models_run_one_batch_each(runtime: Runtime) -> None:
    a: BatchJob = {"id": "a", "rows": [ROW]}
    b: BatchJob = {"id": "b", "rows": [ROW]}
    _queued(runtime, a, b)
    run_messages(
        runtime, [("m", {"jobs": [a], "model": "demo"}), ("n", {"jobs": [b], "model": "nope"})]
    )
    assert _result(runtime, "a") == ("succeeded", [5.0])
    error = runtime.jobs.redis.hget(jobstore.job_key("b"), "error_type")
    assert _result(runtime, "b")[0] == "failed" and error == b"ModelNotFound"


def test_a_redis_outage_hands_every_message_back(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    job: BatchJob = {"id": "r", "rows": [ROW]}
    _queued(runtime, job)

    def away(*args: object, **kwargs: object) -> None:
        raise RedisConnectionError("gone")

    monkeypatch.setattr(runtime.jobs, "finish_many", away)
    assert run_messages(runtime, [("m", {"jobs": [job], "model": "demo"})]) is True
    assert _result(runtime, "r")[0] == "running"  # the redelivery finishes it


def test_a_bug_is_raised_for_celery_to_fail_the_messages(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    job: BatchJob = {"id": "x", "rows": [ROW]}
    _queued(runtime, job)
    monkeypatch.setattr(runtime.jobs, "finish_many", SimpleNamespace)  # TypeError: not Redis's
    with pytest.raises(TypeError):
        run_messages(runtime, [("m", {"jobs": [job], "model": "demo"})])
