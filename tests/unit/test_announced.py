"""A small success travels with its wake-up on `EVENTS`: waiters answer without reading it back."""

from __future__ import annotations

import asyncio

import fakeredis
import orjson
import pytest

from gateway.jobs import Predictions
from gateway.state import GatewayState
from shared import jobstore
from shared.errors import JobNotFound
from shared.jobstore import Announced
from shared.settings import Settings
from tests.unit.conftest import FakePublisher
from worker.jobs import JobRecorder
from worker.predict import run_batch

ROW = [0.5 * i for i in range(10)]


def recorded(redis: fakeredis.FakeRedis, jobs: dict[str, str]) -> JobRecorder:
    """A recorder with `jobs` (id -> owner) submitted and started."""
    for job_id, owner in jobs.items():
        record = jobstore.new_record(job_id, kind="json", model="demo", n_rows=1, owner=owner)
        redis.hset(jobstore.job_key(job_id), mapping=record)
    recorder = JobRecorder(redis, ttl=60, max_attempts=3)
    recorder.start_many([(job_id, 1) for job_id in jobs], "demo")
    return recorder


def published(redis: fakeredis.FakeRedis, act: object) -> list[tuple[str, Announced | None]]:
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(jobstore.EVENTS)
    assert callable(act)
    pubsub.get_message(timeout=1)  # the subscription's confirmation
    act()
    message = pubsub.get_message(timeout=1)
    pubsub.close()
    assert message is not None
    return list(jobstore.ended(message["data"]))


def test_a_stored_success_is_announced_with_its_owner_model_version_and_answer() -> None:
    redis = fakeredis.FakeRedis()
    recorder = recorded(redis, {"a": "k1", "b": "", "c": "k2"})
    lines = published(
        redis,
        lambda: recorder.finish_many("7", {"a": [1.5, 1e-05], "b": [2.0]}, {"c": ("E", "bad")}),
    )
    assert lines == [
        ("a", Announced("k1", "demo", "7", orjson.dumps([1.5, 1e-05]))),
        ("b", Announced("", "demo", "7", b"[2.0]")),
        ("c", None),  # a failure: waiters read its error
    ]
    # What is announced is what is stored.
    assert redis.hget(jobstore.job_key("a"), "result") == orjson.dumps([1.5, 1e-05])


def test_only_what_this_call_stored_is_announced() -> None:
    redis = fakeredis.FakeRedis()
    recorder = recorded(redis, {"done": "", "gone": "", "big": ""})
    recorder.finish_many("1", {"done": [1.0]}, {})
    redis.hset(jobstore.job_key("gone"), "status", "cancelled")  # cancelled while it ran
    big = [0.123456789] * 1000  # past ANNOUNCED_MAX_BYTES: read from the store by its waiter
    lines = published(
        redis, lambda: recorder.finish_many("1", {"done": [9.0], "gone": [2.0], "big": big}, {})
    )
    assert lines == [("done", None), ("gone", None), ("big", None)]
    assert redis.hget(jobstore.job_key("done"), "result") == b"[1.0]"  # the first run's
    assert redis.hget(jobstore.job_key("gone"), "status") == b"cancelled"


def test_lines_that_are_not_announcements_are_job_ids() -> None:
    assert list(jobstore.ended(b"a\nb\tonly\ttwo")) == [("a", None), ("b\tonly\ttwo", None)]


@pytest.mark.parametrize("owner_of_wait", ["", "someone-else"])
def test_a_long_poll_answers_from_the_announcement_of_its_own_job(
    settings: Settings, server: fakeredis.FakeServer, publisher: FakePublisher, owner_of_wait: str
) -> None:
    async def scenario() -> tuple[object, int]:
        state = GatewayState.create(
            settings, redis=fakeredis.FakeAsyncRedis(server=server), publisher=publisher
        )
        state.events.start()  # the wake-ups (alias changes are not needed here)
        reads = 0
        read = state.jobs.store.result

        async def counted(job_id: str, owner: str) -> tuple[object, bytes | None]:
            nonlocal reads
            reads += 1
            return await read(job_id, owner)

        state.jobs.store.result = counted  # type: ignore[method-assign,assignment]
        try:
            await asyncio.sleep(0.1)  # subscribed
            publisher.run = False
            job = await state.jobs.submit([ROW, ROW[::-1]], "demo", owner="")
            waiting = asyncio.create_task(state.jobs.result(job.job_id, owner_of_wait, wait=5))
            await asyncio.sleep(0.1)  # the poll read the job (queued) and waits
            run_batch(publisher.runtime, **publisher.sent[0]["kwargs"])  # the worker
            await asyncio.sleep(0.1)  # its wake-up is delivered
            try:
                return await asyncio.wait_for(waiting, 5), reads
            except Exception as exc:
                return exc, reads
        finally:
            await state.jobs.close()
            await state.events.stop()
            await state.redis.aclose()

    answer, reads = asyncio.run(scenario())
    if owner_of_wait == "":
        assert isinstance(answer, Predictions)
        assert orjson.loads(answer.data) == [sum(ROW), sum(ROW[::-1])]  # the mock model's sums
        assert (answer.model, answer.version) == ("demo", "1")
        assert reads == 1  # the read before waiting; the answer came with the wake-up
    else:
        # Someone else's job: "not found", as when it is read.
        assert isinstance(answer, JobNotFound)


def test_a_predict_gives_its_long_poll_slot_back_before_it_answers(
    settings: Settings, server: fakeredis.FakeServer, publisher: FakePublisher
) -> None:
    # A client using all its key's slots sends its next request as soon as it has an answer:
    # the slot must be free by then, or it would get a 429.
    settings = settings.model_copy(update={"max_long_polls_per_key": 1})

    async def scenario() -> list[int]:
        state = GatewayState.create(
            settings, redis=fakeredis.FakeAsyncRedis(server=server), publisher=publisher
        )
        state.events.start()
        held = []
        try:
            await asyncio.sleep(0.1)  # subscribed
            for _ in range(5):
                data = await state.jobs.predict_now_json([ROW], "k1")
                assert orjson.loads(data) == [sum(ROW)]
                held.append(await state.redis.zcard(f"{jobstore.PREFIX}:quota:long-polls:k1"))
            return held
        finally:
            await state.jobs.close()
            await state.events.stop()
            await state.redis.aclose()

    assert asyncio.run(scenario()) == [0] * 5
