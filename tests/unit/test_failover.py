"""worker.failover on fakeredis: which messages move, where to, and only once."""

from __future__ import annotations

import time

import fakeredis
import orjson

from shared.jobstore import WORKERS
from shared.tasks import QUEUE
from worker import failover


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


def test_only_dead_nodes_are_taken_over_and_each_message_once() -> None:
    redis = fakeredis.FakeRedis()
    now = time.time()
    redis.zadd(WORKERS, {"alive@a": now, "dead@b": now - 10})
    for node, tag in (("alive@a", "t1"), ("dead@b", "t2"), ("dead@b", "t3")):
        redis.hset(failover.UNACKED, tag, entry())
        redis.zadd(failover.UNACKED_INDEX, {tag: now})
        failover.Failover(redis, node, 3.0).received(tag)
    redis.hset(failover.held_key("dead@b"), "acked", now)  # acknowledged: not in unacked

    assert failover.Failover(redis, "s1@c", 3.0).sweep() == 2
    assert failover.Failover(redis, "s2@d", 3.0).sweep() == 0
    assert sorted(redis.hkeys(failover.UNACKED)) == [b"t1"]
    assert redis.zrange(failover.UNACKED_INDEX, 0, -1) == [b"t1"]
    assert redis.llen(QUEUE) == 2
    assert not redis.exists(failover.held_key("dead@b"))
    assert redis.smembers(failover.NODES) == {b"alive@a"}


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
