"""Redis behind Sentinel: a master failover under a running gateway and worker, no restart.

A master, a replica and three sentinels on 127.0.0.1 (`devrun.sentinel`, the shape of
`docker-compose.ha.yaml`). `make drill-ha` repeats the failover under load; this checks the
paths one by one: a job accepted before the failover completes after it, a long poll started
before it is answered, the gateway's pub/sub subscription moved to the new master, a job
submitted afterwards runs, and a write no replica confirms is refused with a 503 and forgotten.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator

import httpx
import pytest

from bench.stack import Stack
from devrun.sentinel import ReplicatedRedis
from shared.jobstore import EVENTS, job_key
from tests.integration.models import Sleepy, add_model, row_sums

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ha(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ReplicatedRedis, Stack]]:
    root = tmp_path_factory.mktemp("sentinel")
    add_model(root / "models", "demo", Sleepy(0.0))
    add_model(root / "models", "slow", Sleepy(1.5))
    redis = ReplicatedRedis(root / "redis").start()
    stack = Stack(
        root / "run",
        root / "models",
        sentinels=redis.sentinel_addresses,
        env={
            "MLQUEUE_REDIS_TIMEOUT": "2",
            "MLQUEUE_REPLICA_WAIT_TIMEOUT": "0.5",
            "MLQUEUE_GATEWAY_WORKERS": "1",
        },
    )
    try:
        stack.start_worker("w1", concurrency=2)
        stack.start_gateway()
        yield redis, stack
    finally:
        stack.stop()
        redis.stop()


def rows(n: int, start: float = 0.0) -> list[list[float]]:
    return [[start + i + j / 4 for j in range(10)] for i in range(n)]


def test_jobs_survive_a_master_failover_without_any_restart(
    ha: tuple[ReplicatedRedis, Stack],
) -> None:
    redis, stack = ha
    before, during, after = rows(3), rows(2, 100.0), rows(4, 200.0)
    with httpx.Client(base_url=stack.base_url, timeout=40) as http:
        first = http.post("/v1/jobs", json={"data": before}).json()["job_id"]
        assert http.get(f"/v1/jobs/{first}/result", params={"wait": 20}).json()["data"] == (
            row_sums(before)
        )
        # Accepted (so on the replica too), still running when the master dies.
        slow = http.post("/v1/jobs", json={"data": during, "model": "slow"}).json()["job_id"]
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            poll = pool.submit(lambda: http.get(f"/v1/jobs/{slow}/result", params={"wait": 30}))
            old = redis.master()
            redis.kill(old)
            new = redis.wait_for_new_master(old)
            redis.start_node(old, replica_of=new)  # what a restart policy does
            answer = poll.result(timeout=40)
        assert answer.status_code == 200
        assert answer.json()["data"] == row_sums(during)

        # No process was restarted: the gateway and the worker now use the new master.
        job = http.post("/v1/jobs", json={"data": after})
        assert job.status_code == 202
        result = http.get(f"/v1/jobs/{job.json()['job_id']}/result", params={"wait": 20})
        assert result.json()["data"] == row_sums(after)
        with new.client() as master:
            assert master.exists(job_key(job.json()["job_id"]))
            # The long-poll wakeups are subscribed on the new master (resubscribed).
            assert dict(master.pubsub_numsub(EVENTS))[EVENTS.encode()] >= 1
    assert redis.role(old) == "slave"
    assert stack.gateway is not None and stack.gateway.poll() is None
    assert all(proc.poll() is None for proc in stack.workers.values())


def test_a_job_no_replica_confirms_is_refused_and_forgotten(
    ha: tuple[ReplicatedRedis, Stack],
) -> None:
    redis, stack = ha
    redis.wait_in_sync()
    master = redis.master()
    replica = next(node for node in redis.nodes if node is not master)
    with master.client() as client:
        jobs_before = set(client.scan_iter(job_key("*")))
    redis.pause(replica)  # still connected, so the master takes writes, but nothing confirms
    try:
        with httpx.Client(base_url=stack.base_url, timeout=30) as http:
            refused = http.post("/v1/jobs", json={"data": rows(1)})
    finally:
        redis.resume(replica)
    assert refused.status_code == 503, refused.text
    assert "no Redis replica confirmed" in refused.json()["detail"]
    assert refused.headers["retry-after"]
    with master.client() as client:
        assert set(client.scan_iter(job_key("*"))) == jobs_before  # nothing left to run
