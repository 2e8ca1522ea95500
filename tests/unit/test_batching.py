"""Micro-batching: the gateway's batcher, the worker's batch body and the fast forest path."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import fakeredis
import numpy as np
import orjson
import pytest
from sklearn.ensemble import ExtraTreesRegressor, GradientBoostingRegressor, RandomForestRegressor

from gateway.autopipe import AutoPipeline
from gateway.batcher import Batcher
from gateway.publisher import BrokerPublisher
from gateway.quotas import ResultBytes
from gateway.state import GatewayState
from gateway.store import JobStore
from shared import jobstore
from shared.errors import RateLimited
from shared.settings import Settings
from shared.tasks import PREDICT_BATCH, QUEUE, QUEUE_HIGH
from tests.unit.conftest import CountingLoader
from worker.predict import run_batch
from worker.runtime import Runtime
from worker.sklearn_model import SklearnModel

ROW = [0.5] * 10


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def record(job_id: str) -> dict[str, str]:
    return jobstore.new_record(job_id, kind="json", model="demo", n_rows=1)


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.fail = fail

    async def __call__(self, message_id: str, kwargs: dict[str, Any], queue: str) -> None:
        await asyncio.sleep(0.01)  # a send takes a while: jobs arriving meanwhile must coalesce
        if self.fail:
            raise ConnectionError("broker down")
        self.messages.append((message_id, kwargs))


@pytest.mark.anyio
async def test_an_idle_batcher_sends_at_once_and_a_busy_one_coalesces() -> None:
    redis = fakeredis.FakeAsyncRedis()
    publish = Recorder()
    batcher = Batcher(JobStore(redis, 60), publish, max_rows=1000, max_wait=0.005)
    await batcher.add(record("solo"), [ROW], "demo:1")
    assert [m[1]["jobs"] for m in publish.messages] == [[{"id": "solo", "rows": [ROW]}]]
    assert publish.messages[0][0] == "solo"
    await asyncio.gather(*(batcher.add(record(f"j{i}"), [ROW] * (i + 1), "demo:1")
                           for i in range(50)))  # fmt: skip
    sent = [job["id"] for _, kwargs in publish.messages[1:] for job in kwargs["jobs"]]
    assert sorted(sent) == sorted(f"j{i}" for i in range(50))
    assert len(publish.messages) - 1 < 10  # 50 jobs, far fewer messages
    assert all(kwargs["model"] == "demo:1" for _, kwargs in publish.messages)
    assert await redis.exists(*(jobstore.job_key(f"j{i}") for i in range(50))) == 50


@pytest.mark.anyio
async def test_batches_never_exceed_max_rows_nor_mix_models() -> None:
    publish = Recorder()
    batcher = Batcher(JobStore(fakeredis.FakeAsyncRedis(), 60), publish, max_rows=10,
                      max_wait=0.005)  # fmt: skip
    await asyncio.gather(*(batcher.add(record(f"{m}{i}"), [ROW] * 3, m)
                           for i in range(20) for m in ("a:1", "b:1")))  # fmt: skip
    for _, kwargs in publish.messages:
        assert sum(len(j["rows"]) for j in kwargs["jobs"]) <= 10
        assert {j["id"][0] for j in kwargs["jobs"]} == {kwargs["model"][0]}
    assert sum(len(k["jobs"]) for _, k in publish.messages) == 40


@pytest.mark.anyio
async def test_a_failed_send_fails_its_jobs_and_forgets_their_records() -> None:
    redis = fakeredis.FakeAsyncRedis()
    batcher = Batcher(JobStore(redis, 60), Recorder(fail=True), max_rows=100, max_wait=0.001)
    results = await asyncio.gather(*(batcher.add(record(f"x{i}"), [ROW], "demo:1")
                                     for i in range(5)), return_exceptions=True)  # fmt: skip
    assert all(isinstance(r, ConnectionError) for r in results)
    assert await redis.exists(*(jobstore.job_key(f"x{i}") for i in range(5))) == 0


def queued(redis: fakeredis.FakeRedis, queue: str = QUEUE) -> list[list[str]]:
    """The job ids of each message on `queue`, oldest first."""
    messages = [orjson.loads(m) for m in reversed(redis.lrange(queue, 0, -1))]
    bodies = [orjson.loads(base64.b64decode(m["body"])) for m in messages]
    return [[job["id"] for job in kwargs["jobs"]] for _, kwargs, _ in bodies]


def broker(server: fakeredis.FakeServer) -> BrokerPublisher:
    """The real publisher, whose `_push` (the LPUSH of its own) must not be called."""
    publisher = BrokerPublisher(AutoPipeline(fakeredis.FakeAsyncRedis(server=server)))

    async def no_push(*_: Any) -> None:
        raise AssertionError("the message should have gone with the records")

    publisher._push = no_push  # type: ignore[method-assign]
    return publisher


def encode(publisher: BrokerPublisher) -> Any:
    return lambda message_id, kwargs, queue: publisher.encoded(
        PREDICT_BATCH, message_id, kwargs, "<jobs>", queue
    )


@pytest.mark.anyio
async def test_a_batch_goes_with_its_records_in_one_script() -> None:
    server = fakeredis.FakeServer()
    publisher = broker(server)
    store = JobStore(fakeredis.FakeAsyncRedis(server=server), 60)
    batcher = Batcher(store, Recorder(fail=True), max_rows=100, max_wait=0.001,
                      encode=encode(publisher))  # fmt: skip
    await asyncio.gather(*(batcher.add(record(f"j{i}"), [ROW], "demo:1", QUEUE_HIGH)
                           for i in range(3)))  # fmt: skip
    await batcher.add(record("solo"), [ROW], "demo:1")
    sync = fakeredis.FakeRedis(server=server)
    assert queued(sync, QUEUE_HIGH) == [["j0", "j1", "j2"]]
    assert queued(sync) == [["solo"]]
    assert sync.exists(*(jobstore.job_key(f"j{i}") for i in range(3))) == 3


@pytest.mark.anyio
async def test_a_job_refused_in_the_script_leaves_its_neighbours_a_message_of_their_own() -> None:
    server = fakeredis.FakeServer()
    charge = ResultBytes(limit=ResultBytes.size(1), ttl=60)
    full = {**record("over"), "owner": "full"}
    await JobStore(fakeredis.FakeAsyncRedis(server=server), 60).create_many([full], None, charge)
    publish = Recorder()
    batcher = Batcher(JobStore(fakeredis.FakeAsyncRedis(server=server), 60), publish,
                      max_rows=100, max_wait=0.001, charge=charge,
                      encode=encode(broker(server)))  # fmt: skip
    refused, *accepted = await asyncio.gather(
        batcher.add({**record("over2"), "owner": "full"}, [ROW], "demo:1"),
        *(batcher.add({**record(f"ok{i}"), "owner": f"o{i}"}, [ROW], "demo:1") for i in range(2)),
        return_exceptions=True,
    )
    assert isinstance(refused, RateLimited) and accepted == [None, None]
    assert queued(fakeredis.FakeRedis(server=server)) == []  # the script pushed nothing
    assert [[j["id"] for j in k["jobs"]] for _, k in publish.messages] == [["ok0", "ok1"]]


def submitted(runtime: Runtime, *job_ids: str) -> None:
    for job_id in job_ids:
        runtime.jobs.redis.hset(jobstore.job_key(job_id), mapping=record(job_id))


def outcome(runtime: Runtime, job_id: str) -> tuple[str, Any]:
    fields = runtime.jobs.redis.hgetall(jobstore.job_key(job_id))
    view = jobstore.to_view(job_id, {k.decode(): v for k, v in fields.items()})
    _, predictions, error = runtime.jobs.stored(job_id)
    return view.status.value, predictions if predictions is not None else error


def test_one_bad_job_never_fails_its_neighbours(runtime: Runtime, loader: CountingLoader) -> None:
    submitted(runtime, "a", "b", "c")
    jobs = [{"id": "a", "rows": [ROW, ROW]}, {"id": "b", "rows": [ROW[:3]]},
            {"id": "c", "rows": [[1.0] * 10]}]  # fmt: skip
    assert run_batch(runtime, jobs, "demo:1") == {"jobs": 3, "succeeded": 2, "failed": 1}
    assert outcome(runtime, "a") == ("succeeded", [5.0, 5.0])
    assert outcome(runtime, "b") == ("failed", "row 0: expected 10 features, got 3")
    assert outcome(runtime, "c") == ("succeeded", [10.0])
    assert loader.calls == 1


def test_a_job_that_makes_the_model_raise_fails_alone(runtime: Runtime) -> None:
    class Picky:
        n_features = 10

        def predict(self, X: Any) -> Any:
            if (np.asarray(X) < 0).any():
                raise ValueError("negative input")
            return np.asarray(X).sum(axis=1)

    runtime.models._loader = lambda path: Picky()  # type: ignore[assignment,return-value]
    submitted(runtime, "ok", "poison")
    jobs = [{"id": "ok", "rows": [ROW]}, {"id": "poison", "rows": [[-1.0] * 10]}]
    run_batch(runtime, jobs, "demo:1")
    assert outcome(runtime, "ok") == ("succeeded", [5.0])
    assert outcome(runtime, "poison") == ("failed", "ValueError: negative input")


def test_cancelled_and_finished_jobs_are_skipped(runtime: Runtime) -> None:
    submitted(runtime, "done", "gone", "new")
    run_batch(runtime, [{"id": "done", "rows": [ROW]}], "demo:1")
    cancel = runtime.jobs.redis.register_script(jobstore.CANCEL)
    call = jobstore.cancel_call("gone")
    cancel(keys=call.keys, args=call.args)
    jobs = [{"id": i, "rows": [[2.0] * 10]} for i in ("done", "gone", "new")]
    assert run_batch(runtime, jobs, "demo:1") == {"jobs": 3, "succeeded": 1, "failed": 0}
    assert outcome(runtime, "done") == ("succeeded", [5.0])  # the first result stands
    assert outcome(runtime, "gone")[0] == "cancelled"
    assert outcome(runtime, "new") == ("succeeded", [20.0])


def test_batched_predictions_equal_each_jobs_own_predict(
    runtime: Runtime, model_dir: Path, diabetes_rows: list[list[float]]
) -> None:
    real = SklearnModel.load(model_dir / "demo" / "1" / "model.skops")
    runtime.models._loader = lambda path: real  # type: ignore[assignment,return-value]
    sizes = [1, 3, 1, 7, 2, 10, 1]
    jobs, start = [], 0
    for i, n in enumerate(sizes):
        jobs.append({"id": f"j{i}", "rows": diabetes_rows[start : start + n]})
        start += n
    submitted(runtime, *(j["id"] for j in jobs))
    run_batch(runtime, jobs, "demo:1")
    for job in jobs:
        expected = real.estimator.predict(np.asarray(job["rows"])).tolist()
        assert outcome(runtime, job["id"]) == ("succeeded", expected)


@pytest.mark.parametrize("kind", [RandomForestRegressor, ExtraTreesRegressor])
def test_the_fast_forest_path_is_bit_identical(
    kind: type, diabetes_rows: list[list[float]]
) -> None:
    rng = np.random.default_rng(0)
    X = np.asarray(diabetes_rows)
    y = rng.normal(size=len(X))
    model = SklearnModel(kind(n_estimators=30, random_state=0), fast=True).train(X, y)
    slow = SklearnModel(model.estimator, fast=False)
    for n in (1, 2, 10, 100, len(X)):
        assert np.array_equal(model.predict(X[:n]), slow.predict(X[:n]))
    wide = rng.normal(scale=0.1, size=(50_000, 10))
    assert np.array_equal(model.predict(wide), model.estimator.predict(wide))


def test_other_estimators_keep_their_own_predict(diabetes_rows: list[list[float]]) -> None:
    X = np.asarray(diabetes_rows[:100])
    model = SklearnModel(GradientBoostingRegressor(n_estimators=5)).train(X, X[:, 0])
    assert np.array_equal(model.predict(X), model.estimator.predict(X))


def test_the_message_follows_the_replica_wait_when_there_is_one(settings: Settings) -> None:
    # With Sentinel's replica WAIT the records must be on a replica before any worker can pop
    # the message: the message is then pushed on its own, after the WAIT.
    def batcher_of(s: Settings) -> Batcher:
        return GatewayState.create(s, redis=fakeredis.FakeAsyncRedis()).jobs.batcher

    assert batcher_of(settings).encode is not None
    sentinel = settings.model_copy(update={"redis_sentinels": ["127.0.0.1:26379"]})
    assert sentinel.replica_wait
    assert batcher_of(sentinel).encode is None
