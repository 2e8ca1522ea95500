"""Batched direct tasks: which messages are batched, when a batch is sent, how its messages are
acknowledged, and what each task of a batch stores (fakeredis, `MockModel`: row sums)."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import fakeredis
import pytest
from celery import Celery, states
from celery.backends.redis import RedisBackend
from redis.exceptions import ConnectionError as RedisConnectionError

from shared import jobstore
from shared.celery_app import create_celery
from shared.settings import Settings
from worker import failover
from worker.coalesce import Batcher
from worker.direct_batch import run_direct_batch
from worker.direct_results import context
from worker.direct_strategy import DIRECT, batchable
from worker.direct_tasks import DirectTask
from worker.runtime import Runtime

ROW = [0.5] * 10  # MockModel predicts the row sum: 5.0
PLAIN: dict[str, Any] = {"id": "t", "task": "mlqueue.predict"}


@pytest.mark.parametrize(
    ("payload", "headers", "plain"),
    [
        (((), {"rows": [ROW]}, {}), PLAIN, True),
        (((), {"rows": [ROW], "model": "demo:1"}, None), PLAIN, True),
        (((), {"rows": "junk"}, {}), PLAIN, True),  # the batch fails it as `run_job` would
        (([[ROW]], {}, {}), PLAIN, False),  # positional args: Celery reports them
        (((), {"rows": [ROW], "extra": 1}, {}), PLAIN, False),
        (((), {"model": "demo"}, {}), PLAIN, False),  # no rows: Celery's TypeError
        (((), {"rows": [ROW], "model": 3}, {}), PLAIN, False),
        (((), {"rows": [ROW]}, {"callbacks": [{"task": "x"}]}), PLAIN, False),
        (((), {"rows": [ROW]}, {"chord": {"task": "x"}}), PLAIN, False),
        (((), {"rows": [ROW]}, {}), {**PLAIN, "eta": "2030-01-01T00:00:00"}, False),
        (((), {"rows": [ROW]}, {}), {**PLAIN, "timelimit": [1, 2]}, False),
        (((), {"rows": [ROW]}, {}), {**PLAIN, "timelimit": [None, None]}, True),
        (((), {"rows": [ROW]}, {}), {**PLAIN, "group": "g"}, False),
        (((), {"rows": [ROW]}, {}), {**PLAIN, "traceparent": "00-ab-cd-01"}, False),
        ("not a triple", PLAIN, False),
    ],
)
def test_only_plain_messages_are_batched(
    payload: Any, headers: dict[str, Any], plain: bool
) -> None:
    assert batchable(payload, headers) is plain


# --- the consumer's side, with a fake pool, timer and prefetch ----------------------------


class FakeRequest:
    def __init__(self, n: int) -> None:
        self.id = self.name = f"task-{n}"
        self.request_dict = {"id": self.id, "task": "mlqueue.predict"}
        self.kwargs = {"rows": [ROW]}
        self.message = SimpleNamespace(delivery_tag=f"tag-{n}")
        self.expires = None
        self.events: list[Any] = []

    def on_accepted(self, pid: int, time_accepted: float) -> None:
        self.events.append("accepted")

    def acknowledge(self) -> None:
        self.events.append("ack")

    def reject(self, requeue: bool = False) -> None:
        self.events.append(("reject", requeue))

    def on_failure(self, exc_info: Any) -> None:
        self.events.append(("failure", exc_info))

    def revoked(self) -> bool:
        self.events.append("revoked")  # Celery acknowledges it and stores REVOKED
        return True


class FakePool:
    num_processes = 2

    def __init__(self) -> None:
        self.jobs: list[dict[str, Any]] = []

    def apply_async(self, target: Callable[..., Any], args: tuple[Any, ...], **kw: Any) -> None:
        self.jobs.append({"target": target, "tasks": args[0], **kw})

    def end(self, index: int, handed_back: bool = False) -> None:
        job = self.jobs[index]
        job["accept_callback"](123, 0.0)
        job["callback"](handed_back)


class FakeTimer:
    def __init__(self) -> None:
        self.scheduled: list[tuple[float, Callable[[], None]]] = []

    def call_after(self, secs: float, fun: Callable[[], None]) -> object:
        self.scheduled.append((secs, fun))
        return object()

    def fire(self) -> None:
        _, fun = self.scheduled.pop(0)
        fun()


class FakeQos:
    def __init__(self) -> None:
        self.value = 2

    def increment_eventually(self, n: int = 1) -> None:
        self.value += n

    def decrement_eventually(self, n: int = 1) -> None:
        self.value -= n


class FakeConsumer:
    def __init__(self) -> None:
        self.pool, self.timer, self.qos = FakePool(), FakeTimer(), FakeQos()
        self.controller = SimpleNamespace(state=SimpleNamespace(revoked=set()))


def batcher(max_size: int = 3, wait: float = 0.002) -> tuple[Batcher, FakeConsumer]:
    consumer = FakeConsumer()
    return Batcher(consumer, max_size, wait, (5, 7), DIRECT), consumer


def add(b: Batcher, first: int, n: int) -> list[FakeRequest]:
    requests = [FakeRequest(i) for i in range(first, first + n)]
    for req in requests:
        b.add(req)  # type: ignore[arg-type]
    return requests


def test_a_full_buffer_goes_to_the_pool_at_once_with_the_time_limits() -> None:
    b, consumer = batcher(max_size=3, wait=60)
    add(b, 0, 3)
    [job] = consumer.pool.jobs
    assert [t.id for t in job["tasks"]] == ["task-0", "task-1", "task-2"]
    assert job["tasks"][0].kwargs == {"rows": [ROW]}
    assert (job["soft_timeout"], job["timeout"]) == (5, 7)


def test_a_lone_task_waits_for_the_timer_then_goes() -> None:
    b, consumer = batcher(max_size=3, wait=0.002)
    add(b, 0, 1)
    assert consumer.pool.jobs == []
    [(delay, _)] = consumer.timer.scheduled
    assert 0 <= delay <= 0.002
    time.sleep(0.003)
    consumer.timer.fire()
    assert [t.id for t in consumer.pool.jobs[0]["tasks"]] == ["task-0"]


def test_while_every_process_is_busy_the_buffer_fills_and_goes_when_one_is_free() -> None:
    b, consumer = batcher(max_size=2, wait=60)
    add(b, 0, 4)  # two full batches: one per process
    assert len(consumer.pool.jobs) == 2
    add(b, 4, 5)  # both busy: these wait, full or not
    assert len(consumer.pool.jobs) == 2
    consumer.pool.end(0)
    assert [t.id for t in consumer.pool.jobs[2]["tasks"]] == ["task-4", "task-5"]
    consumer.pool.end(1)
    assert [len(job["tasks"]) for job in consumer.pool.jobs] == [2, 2, 2, 2]
    assert [item.req.id for item in b.buffer] == ["task-8"]  # not full: it waits for the timer


def test_a_batch_records_what_this_node_holds_in_one_round_trip(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorded: list[list[str]] = []
    monkeypatch.setattr(failover, "received_many", recorded.append)
    b, _ = batcher(max_size=3)
    add(b, 0, 3)
    assert recorded == [["tag-0", "tag-1", "tag-2"]]


def test_a_task_revoked_while_buffered_is_left_out_of_its_batch() -> None:
    b, consumer = batcher(max_size=3, wait=60)
    first = add(b, 0, 1)
    consumer.controller.state.revoked.add("task-0")
    add(b, 1, 2)
    [job] = consumer.pool.jobs
    assert [t.id for t in job["tasks"]] == ["task-1", "task-2"]
    assert first[0].events == ["revoked"]


def test_messages_are_acknowledged_only_once_their_batch_ended() -> None:
    b, consumer = batcher(max_size=2)
    requests = add(b, 0, 2)
    assert all(r.events == [] for r in requests)
    consumer.pool.end(0)
    assert all(r.events == ["accepted", "ack"] for r in requests)


def test_a_batch_that_met_a_redis_outage_hands_every_message_back() -> None:
    b, consumer = batcher(max_size=2)
    requests = add(b, 0, 2)
    consumer.pool.end(0, handed_back=True)
    assert all(r.events == ["accepted", ("reject", True)] for r in requests)


def test_a_lost_pool_process_is_handled_by_celery_for_each_request() -> None:
    b, consumer = batcher(max_size=2)
    requests = add(b, 0, 2)
    consumer.pool.jobs[0]["error_callback"]("einfo")
    assert all(r.events == [("failure", "einfo")] for r in requests)
    assert b.running == 0


def test_batched_messages_raise_the_prefetch_up_to_a_bound_and_give_it_back() -> None:
    b, consumer = batcher(max_size=2, wait=60)  # bound: 2 x (2 processes + 1) = 6
    add(b, 0, 10)
    assert consumer.qos.value == 2 + 6 and b.raised == 6
    ended = 0
    while ended < len(consumer.pool.jobs):
        consumer.pool.end(ended)
        ended += 1
    assert ended == 5
    assert consumer.qos.value == 2 and b.raised == 0 and b.running == 0


# --- the pool process's side -----------------------------------------------------------------


@pytest.fixture
def celery_app(settings: Settings, server: fakeredis.FakeServer) -> Celery:
    app = create_celery(settings)
    backend = app.backend
    assert isinstance(backend, RedisBackend)
    backend.__dict__["client"] = fakeredis.FakeRedis(server=server)  # a cached property
    return app


def task(task_id: str, rows: Any, model: str = "default") -> DirectTask:
    request = {
        "id": task_id,
        "task": "mlqueue.predict",
        "retries": 0,
        "hostname": "w1@test",
        "delivery_info": {"routing_key": "mlqueue"},
    }
    return DirectTask(task_id, request, {"rows": rows, "model": model})


def stored(app: Celery, task_id: str) -> dict[str, Any]:
    """The task's record in the result backend, as stored (PENDING when there is none)."""
    raw = app.backend.client.get(app.backend.get_key_for_task(task_id))
    meta: dict[str, Any] = app.backend.decode(raw) if raw else {"status": states.PENDING}
    return meta


def test_each_task_of_a_batch_gets_its_own_prediction_job_and_result(
    runtime: Runtime, celery_app: Celery
) -> None:
    tasks = [task(f"t{i}", [[float(i)] * 10]) for i in range(5)]
    assert run_direct_batch(runtime, celery_app.backend, tasks) is False
    for i in range(5):
        meta = stored(celery_app, f"t{i}")
        assert meta["status"] == states.SUCCESS
        assert meta["result"] == {"predictions": [10.0 * i], "model": "demo", "version": "1"}
        record = runtime.jobs.redis.hgetall(jobstore.job_key(f"t{i}"))
        assert record[b"status"] == b"succeeded" and record[b"kind"] == b"task"


def test_a_stored_result_is_what_celery_itself_stores(runtime: Runtime, celery_app: Celery) -> None:
    one = task("mine", [ROW])
    run_direct_batch(runtime, celery_app.backend, [one])
    ours = celery_app.backend.client.get(celery_app.backend.get_key_for_task("mine"))
    result = {"predictions": [5.0], "model": "demo", "version": "1"}
    celery_app.backend.mark_as_done("celerys", result, request=context(one))
    theirs = celery_app.backend.client.get(celery_app.backend.get_key_for_task("celerys"))
    strip = {"date_done", "task_id"}
    ours_meta, theirs_meta = celery_app.backend.decode(ours), celery_app.backend.decode(theirs)
    assert {k: v for k, v in ours_meta.items() if k not in strip} == {
        k: v for k, v in theirs_meta.items() if k not in strip
    }
    assert ours_meta["name"] == "mlqueue.predict" and ours_meta["queue"] == "mlqueue"


def test_a_bad_task_fails_alone_with_the_error_run_job_raises(
    runtime: Runtime, celery_app: Celery
) -> None:
    tasks = [task("good", [ROW]), task("bad", [ROW[:3]]), task("lost", [ROW], model="nope")]
    run_direct_batch(runtime, celery_app.backend, tasks)
    assert stored(celery_app, "good")["result"]["predictions"] == [5.0]
    bad = stored(celery_app, "bad")
    assert bad["status"] == states.FAILURE
    assert bad["result"]["exc_type"] == "InvalidInput"
    assert bad["result"]["exc_message"] == ["row 0: expected 10 features, got 3"]
    assert stored(celery_app, "lost")["result"]["exc_type"] == "ModelNotFound"
    record = runtime.jobs.redis.hgetall(jobstore.job_key("bad"))
    assert record[b"error_type"] == b"InvalidInput"


def test_a_task_that_already_ended_is_answered_from_the_store(
    runtime: Runtime, celery_app: Celery
) -> None:
    run_direct_batch(runtime, celery_app.backend, [task("dup", [ROW])])
    runtime.models._loader = lambda data: pytest.fail("must not load or predict again")
    runtime.models._models.clear()
    # Sent again with other rows (a redelivery, or the same id twice in one batch).
    again = [task("dup", [[1.0] * 10]), task("dup", [[2.0] * 10])]
    run_direct_batch(runtime, celery_app.backend, again)
    assert stored(celery_app, "dup")["result"]["predictions"] == [5.0]


def test_a_redis_outage_hands_the_batch_back(
    runtime: Runtime, celery_app: Celery, monkeypatch: pytest.MonkeyPatch
) -> None:
    def away(*args: object, **kwargs: object) -> None:
        raise RedisConnectionError("gone")

    monkeypatch.setattr(runtime.jobs, "finish_many", away)
    assert run_direct_batch(runtime, celery_app.backend, [task("t", [ROW])]) is True
    assert stored(celery_app, "t")["status"] == states.PENDING  # nothing to acknowledge
