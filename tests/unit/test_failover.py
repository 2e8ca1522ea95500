"""worker.failover on fakeredis: which messages move, where to, and only once."""

from __future__ import annotations

import time

import fakeredis
import orjson
import pytest

from shared import jobstore
from shared.jobstore import WORKERS
from shared.tasks import QUEUE, QUEUE_HIGH, WORKER_QUEUES
from worker import failover
from worker.resender import LOCK, Resender


def entry(priority: int | None = None, routing_key: str = QUEUE) -> bytes:
    """An unacked entry as kombu's Redis transport writes it: [message, exchange, routing key]."""
    properties: dict[str, object] = {"delivery_info": {"exchange": "", "routing_key": routing_key}}
    if priority is not None:
        properties["priority"] = priority
    message = {"body": "e30=", "headers": {"id": "x"}, "properties": properties}
    return orjson.dumps([message, "", routing_key])


def test_a_message_goes_back_to_its_priority_list_marked_redelivered() -> None:
    assert failover._requeued(entry())[0] == QUEUE
    assert failover._requeued(entry(priority=0))[0] == QUEUE
    assert failover._requeued(entry(priority=5))[0] == f"{QUEUE}\x06\x163"
    assert failover._requeued(entry(priority=42))[0] == f"{QUEUE}\x06\x169"
    queue, message = failover._requeued(entry(routing_key="elsewhere"))
    assert (queue, message) == ("", b"")
    moved = orjson.loads(failover._requeued(entry())[1])
    assert moved["headers"]["redelivered"] is True
    assert moved["properties"]["delivery_info"]["redelivered"] is True
    assert moved["body"] == "e30="


def test_a_message_goes_back_to_its_own_queue_high_low_or_webhooks() -> None:
    for queue in WORKER_QUEUES:
        assert failover._requeued(entry(routing_key=queue))[0] == queue
    assert (
        failover._requeued(entry(priority=5, routing_key=QUEUE_HIGH))[0] == "mlqueue.high\x06\x163"
    )


def test_only_dead_nodes_are_taken_over_and_each_message_once() -> None:
    redis = fakeredis.FakeRedis()
    now = time.time()
    redis.zadd(WORKERS, {"alive@a": now, "dead@b": now - 10})
    for node, tag in (("alive@a", "t1"), ("dead@b", "t2"), ("dead@b", "t3")):
        redis.hset(failover.UNACKED, tag, entry())
        redis.zadd(failover.UNACKED_INDEX, {tag: now})
        failover.Failover(redis, node, 3.0).received(tag)
    redis.hset(failover.held_key("dead@b"), "acked", now)  # acknowledged: not in unacked

    survivors = [failover.Failover(redis, name, 3.0) for name in ("s1@c", "s2@d")]
    assert survivors[0].sweep() == 0  # just started: it gives the others time to beat first
    for survivor in survivors:
        survivor._reachable_since -= 10  # as if it had reached Redis for 10 s
    assert [s.sweep() for s in survivors] == [2, 0]
    assert sorted(redis.hkeys(failover.UNACKED)) == [b"t1"]
    assert redis.zrange(failover.UNACKED_INDEX, 0, -1) == [b"t1"]
    assert redis.llen(QUEUE) == 2
    assert not redis.exists(failover.held_key("dead@b"))
    assert redis.smembers(failover.NODES) == {b"alive@a"}
    # For a minute the resender may treat what was sent before that beat as lost.
    assert failover.Failover(redis, "s3@e", 3.0).died_before() == now - 10


def test_a_message_changed_since_it_was_read_is_not_moved() -> None:
    redis = fakeredis.FakeRedis()
    node = failover.Failover(redis, "s@c", 3.0)
    restore = redis.register_script(failover.RESTORE)
    redis.hset(failover.UNACKED, "t", entry(priority=3))
    moved = restore(
        keys=[failover.UNACKED, failover.UNACKED_INDEX, QUEUE, failover.held_key("x")],
        args=["t", entry(), b"stale"],
    )
    assert moved == 0 and redis.llen(QUEUE) == 0 and redis.hexists(failover.UNACKED, "t")
    assert node.sweep() == 0


def test_after_a_node_died_the_outbox_resends_what_was_sent_before_without_the_grace() -> None:
    redis = fakeredis.FakeRedis()
    died = time.time() - 3
    for job_id, sent_at in (("before", died - 1), ("after", died + 1)):
        record = jobstore.new_record(job_id, kind="json", model="demo", n_rows=1)
        record |= {"spec": "demo:1", "rows": "[[0.5]]"}
        redis.hset(jobstore.job_key(job_id), mapping=record)
        redis.zadd(jobstore.PENDING, {job_id: sent_at})
    sent: list[str] = []
    resender = Resender(redis, lambda *a: sent.append(a[0]), grace=20, interval=1)
    assert resender.sweep() == 0  # both younger than the grace
    redis.delete(LOCK)  # as if the next beat
    assert resender.sweep(before=died) == 1
    assert redis.zscore(jobstore.PENDING, "after") == pytest.approx(died + 1)
    assert sent == ["mlqueue.predict_batch"]


def test_after_a_node_died_its_possibly_lost_jobs_go_again_even_behind_a_backlog() -> None:
    redis = fakeredis.FakeRedis()
    died = time.time() - 3
    for job_id, sent_at in (("before", died - 1), ("after", died + 1)):
        record = jobstore.new_record(job_id, kind="json", model="demo", n_rows=1)
        record |= {"spec": "demo:1", "rows": "[[0.5]]"}
        redis.hset(jobstore.job_key(job_id), mapping=record)
        redis.zadd(jobstore.PENDING, {job_id: sent_at})
    redis.lpush(QUEUE, b"a backlog that would take long to drain")
    sent: list[str] = []
    resender = Resender(redis, lambda *a: sent.append(a[0]), grace=20, interval=1)
    assert resender.sweep() == 0  # no death: the backlog holds the sweep back
    redis.delete(LOCK)
    assert resender.sweep(before=died) == 1  # only what was sent before the death
    assert sent == ["mlqueue.predict_batch"]
    redis.delete(LOCK)
    assert resender.sweep(before=died) == 0  # re-armed: once per death
