"""Per-key limits (uploads, long polls, stored result bytes) answer 429 with Retry-After, the
global cap on waiting chunk bytes 503; slots of a crashed gateway free themselves."""

from __future__ import annotations

import time
from pathlib import Path

import fakeredis
import pytest
from fastapi.testclient import TestClient

from shared.jobstore import PREFIX
from shared.settings import Settings
from tests.unit.conftest import FakePublisher
from tests.unit.test_csv import FEATURES, table, to_csv

ROW = [0.5] * 10


@pytest.fixture
def settings(model_dir: Path) -> Settings:
    return Settings(
        model_dir=model_dir,
        default_model="demo",
        csv_chunk_rows=3,
        max_uploads_per_key=2,
        max_long_polls_per_key=2,
        max_stored_bytes_per_key=2400,  # 100 predictions of 24 bytes
        max_waiting_chunk_bytes=1024,
    )


@pytest.fixture
def redis(server: fakeredis.FakeServer) -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(server=server)


def hold(redis: fakeredis.FakeRedis, kind: str, n: int, lease_ends: float) -> None:
    """`n` slots of the (keyless) owner, as other requests or a crashed gateway left them."""
    key = f"{PREFIX}:quota:{kind}:"
    redis.zadd(key, {f"other{i}": lease_ends for i in range(n)})


def upload(client: TestClient, data: bytes) -> tuple[int, dict[str, str], dict[str, object]]:
    response = client.post("/v1/jobs/csv", files={"file": ("d.csv", data, "text/csv")})
    return response.status_code, dict(response.headers), response.json()


def test_a_key_over_its_concurrent_uploads_gets_429_with_retry_after(
    client: TestClient, redis: fakeredis.FakeRedis
) -> None:
    hold(redis, "uploads", 2, time.time() + 60)
    status, headers, problem = upload(client, to_csv(table(2), FEATURES))
    assert status == 429
    assert headers["retry-after"] == "5"
    assert problem["title"] == "RateLimited"
    assert "already has 2 uploads in progress" in str(problem["detail"])
    assert redis.keys(f"{PREFIX}:job:*") == []  # nothing was read or stored


def test_slots_whose_lease_ended_are_free_again(
    client: TestClient, redis: fakeredis.FakeRedis
) -> None:
    hold(redis, "uploads", 2, time.time() - 1)  # a gateway crashed holding them
    assert upload(client, to_csv(table(2), FEATURES))[0] == 202
    # The upload's own slot was given back when it ended.
    assert redis.zcard(f"{PREFIX}:quota:uploads:") == 0


def test_a_key_over_its_concurrent_long_polls_gets_429(
    client: TestClient, redis: fakeredis.FakeRedis, publisher: FakePublisher
) -> None:
    publisher.run = False  # the job stays queued
    job_id = client.post("/v1/jobs", json={"data": [ROW]}).json()["job_id"]
    hold(redis, "long-polls", 2, time.time() + 60)
    response = client.get(f"/v1/jobs/{job_id}/result", params={"wait": 1})
    assert response.status_code == 429
    assert response.headers["retry-after"] == "5"
    assert "long polls" in response.json()["detail"]
    # A read that does not wait needs no slot.
    assert client.get(f"/v1/jobs/{job_id}/result").status_code == 202


def test_a_finished_job_answers_a_long_poll_without_a_slot(
    client: TestClient, redis: fakeredis.FakeRedis
) -> None:
    job_id = client.post("/v1/jobs", json={"data": [ROW]}).json()["job_id"]
    hold(redis, "long-polls", 2, time.time() + 60)
    response = client.get(f"/v1/jobs/{job_id}/result", params={"wait": 1})
    assert response.status_code == 200
    assert response.json()["data"] == [5.0]


def test_a_key_over_its_stored_result_bytes_gets_429(client: TestClient) -> None:
    for _ in range(4):  # 96 predictions: 2304 bytes of the 2400 allowed
        assert client.post("/v1/jobs", json={"data": [ROW] * 24}).status_code == 202
    response = client.post("/v1/jobs", json={"data": [ROW] * 5})
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) > 0
    assert "2304 bytes of results stored" in response.json()["detail"]
    assert client.post("/v1/jobs", json={"data": [ROW] * 4}).status_code == 202  # 2400 fits


def test_chunk_bytes_waiting_over_the_global_cap_are_503(
    client: TestClient, redis: fakeredis.FakeRedis, publisher: FakePublisher
) -> None:
    publisher.run = False  # chunks wait unscored
    first = upload(client, to_csv(table(10)))  # about 600 bytes in 4 chunks
    assert first[0] == 202, first
    status, headers, problem = upload(client, to_csv(table(10)))
    assert status == 503
    assert headers["retry-after"]
    assert "MLQUEUE_MAX_WAITING_CHUNK_BYTES" in str(problem["detail"])
    # Cancelling the first job frees its bytes: the same file is taken now.
    assert client.delete(f"/v1/jobs/{first[2]['job_id']}").status_code == 200
    assert upload(client, to_csv(table(10)))[0] == 202
    assert redis.zcard("mlqueue:waiting-chunks") == 4
