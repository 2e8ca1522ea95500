"""Fast failover on real Redis, real kombu and a real Celery worker.

The test plays a worker node that dies holding a message: it takes the message the way a worker
does (kombu, unacknowledged, so it sits in kombu's `unacked` hash), records it as that node's, and
never beats. A survivor's sweep must put it back on the queue once, the running worker must then
run it, and the job's result must be the model's prediction.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from kombu import Connection, Queue
from kombu.simple import SimpleQueue

from shared.jobstore import WORKERS
from shared.tasks import QUEUE
from tests.integration.conftest import System, consumer_paused
from worker import failover
from worker.sklearn_model import SklearnModel

pytestmark = pytest.mark.integration


def test_a_dead_nodes_message_is_requeued_once_and_its_job_completes(
    system: System, http: httpx.Client, model_dir: Path, diabetes_rows: list[list[float]]
) -> None:
    redis = system.redis()
    rows = diabetes_rows[:7]
    dead = failover.Failover(redis, "dead@test-node", dead_after=0.9)
    with consumer_paused(system):
        response = http.post("/v1/jobs", json={"data": rows})
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        with Connection(system.redis_url) as connection:
            queue = SimpleQueue(connection.channel(), Queue(QUEUE), no_ack=False, accept=["json"])
            message = queue.get(timeout=10)  # now unacknowledged, held by the "dead" node
            tag = str(message.delivery_tag)
            dead.received(tag)
            assert redis.hexists(failover.UNACKED, tag)
            assert redis.sismember(failover.NODES, "dead@test-node")

            # Beating every 0.3 s, dead after 0.9 s (the real worker's window is 1.5 s).
            survivors = [failover.Failover(redis, f"s{i}@test-node", 0.9) for i in range(2)]
            moved = []
            for _ in range(10):
                moved += [s.sweep() for s in survivors]
                if sum(moved):
                    break
                time.sleep(0.3)
            assert moved[:2] == [0, 0]  # its last sign of life was too recent at first
            assert sum(moved) == 1 and moved[-2:] == [1, 0]  # then exactly once
            assert not redis.hexists(failover.UNACKED, tag)
            assert redis.llen(QUEUE) == 1
            assert not redis.exists(failover.held_key("dead@test-node"))
            assert not redis.sismember(failover.NODES, "dead@test-node")
            redelivered = queue.get(timeout=5)  # the same message, marked redelivered
            assert redelivered.body == message.body
            assert redelivered.delivery_info["redelivered"] is True
            redelivered.requeue()  # hand it to the real worker, once the consumer is back
            queue.close()
    answer = http.get(f"/v1/jobs/{job_id}/result", params={"wait": 20})
    assert answer.status_code == 200, answer.text
    model = SklearnModel.load(model_dir / "demo" / "1" / "model.skops")
    assert answer.json()["data"] == [float(v) for v in model.predict(np.asarray(rows))]


def test_a_live_nodes_messages_stay_and_its_acked_tags_are_pruned(system: System) -> None:
    redis = system.redis()
    node = failover.Failover(redis, "busy@test-node", dead_after=60)
    redis.zadd(WORKERS, {"busy@test-node": time.time() + 60})  # beats, for the real worker too
    redis.hset(failover.UNACKED, "held-tag", b'[{"body": ""}, "elsewhere", "elsewhere"]')
    node.received("held-tag")
    node.received("acked-tag")  # not in `unacked`: acknowledged since
    try:
        assert failover.Failover(redis, "other@test-node", 60).sweep() == 0
        node.sweep()  # prunes its own record
        assert set(redis.hkeys(failover.held_key("busy@test-node"))) == {b"held-tag"}
        assert redis.hexists(failover.UNACKED, "held-tag")
    finally:
        redis.hdel(failover.UNACKED, "held-tag")
        redis.delete(failover.held_key("busy@test-node"))
        redis.srem(failover.NODES, "busy@test-node")
        redis.zrem(WORKERS, "busy@test-node")
