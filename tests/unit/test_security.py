"""API keys, job ownership and backpressure, on the gateway with fakes injected."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError

from gateway import keys
from gateway.app import create_app
from gateway.backpressure import QueueDepth, retry_after
from gateway.state import GatewayState
from shared.settings import Settings
from shared.tasks import QUEUE
from tests.unit.conftest import FakePublisher
from worker.predict import run_job
from worker.runtime import Runtime

ROW = [0.01 * i for i in range(10)]
KEY_A, KEY_B = keys.new_key(), keys.new_key()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"api_keys": [keys.digest(KEY_A), keys.digest(KEY_B)]})


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def submit(client: TestClient, key: str) -> str:
    response = client.post("/v1/jobs", json={"data": [ROW]}, headers=bearer(key))
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/jobs"),
        ("GET", "/v1/jobs/6f1c1ad5-0b8e-4a59-8a47-3c5ad6d1e000"),
        ("GET", "/v1/jobs/6f1c1ad5-0b8e-4a59-8a47-3c5ad6d1e000/result"),
        ("DELETE", "/v1/jobs/6f1c1ad5-0b8e-4a59-8a47-3c5ad6d1e000"),
        ("GET", "/v1/models"),
        ("POST", "/predict"),
        ("POST", "/predict_csv"),
    ],
)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {KEY_A}"},
        {"Authorization": f"Bearer {keys.digest(KEY_A)}"},  # the digest is not the key
        {"Authorization": "Bearer " + "x" * 8000},
        {"Authorization": "Bearer \u00e9\u00e8\U0001f600".encode()},
    ],
)
def test_without_a_valid_key_every_protected_route_is_401(
    client: TestClient, method: str, path: str, headers: dict[str, str | bytes]
) -> None:
    response = client.request(method, path, json={"data": [ROW]}, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["title"] == "Unauthorized"


def test_metrics_need_a_key_unless_public(
    app: FastAPI, settings: Settings, state: GatewayState
) -> None:
    client = TestClient(app)
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=bearer(KEY_A)).status_code == 200
    state.settings = settings.model_copy(update={"metrics_public": True})
    assert client.get("/metrics").status_code == 200


def test_probes_and_docs_stay_open(client: TestClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code in (200, 503)  # open: no 401, whatever its state
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/docs").status_code == 200


def test_a_valid_key_gets_its_job_and_another_key_gets_404(client: TestClient) -> None:
    job_id = submit(client, KEY_A)
    mine = client.get(f"/v1/jobs/{job_id}/result", headers=bearer(KEY_A))
    assert mine.status_code == 200 and mine.json()["data"] == [pytest.approx(sum(ROW))]
    for method, path in [
        ("GET", f"/v1/jobs/{job_id}"),
        ("GET", f"/v1/jobs/{job_id}/result"),
        ("DELETE", f"/v1/jobs/{job_id}"),
    ]:
        theirs = client.request(method, path, headers=bearer(KEY_B))
        unknown = client.request(method, f"/v1/jobs/{uuid.uuid4()}", headers=bearer(KEY_B))
        assert theirs.status_code == unknown.status_code == 404
        # Indistinguishable from an unknown id, except for the id itself.
        assert theirs.json()["title"] == unknown.json()["title"] == "JobNotFound"


def test_the_job_record_holds_a_short_owner_id_not_the_key(
    client: TestClient, server: fakeredis.FakeServer
) -> None:
    job_id = submit(client, KEY_A)
    owner = fakeredis.FakeRedis(server=server).hget(f"mlqueue:job:{job_id}", "owner")
    assert owner == keys.digest(KEY_A)[:16].encode()
    assert KEY_A.encode() not in b"".join(
        v for v in fakeredis.FakeRedis(server=server).hgetall(f"mlqueue:job:{job_id}").values()
    )


def test_job_ids_are_uuid4(client: TestClient) -> None:
    job_id = submit(client, KEY_A)
    assert uuid.UUID(job_id).version == 4


def test_legacy_predict_with_a_key(client: TestClient) -> None:
    response = client.post("/predict", json={"data": [ROW, ROW]}, headers=bearer(KEY_B))
    assert response.status_code == 200
    assert response.json()["data"] == [pytest.approx(sum(ROW))] * 2


def test_every_v1_and_legacy_route_declares_the_key_check(app: FastAPI) -> None:
    # Guards routers added later (CSV jobs, batches): they must be included with the key check,
    # which puts the bearer scheme on each of their operations.
    paths = app.openapi()["paths"]
    protected = [
        (path, op)
        for path, ops in paths.items()
        for op in ops.values()
        if path.startswith(("/v1", "/predict"))
    ]
    assert len(protected) >= 7
    for path, op in protected:
        assert op.get("security") == [{"HTTPBearer": []}], path
        assert "401" in op["responses"], path
    for path in ("/healthz", "/readyz"):
        assert "security" not in paths[path]["get"]


def test_keys_off_by_default_and_parsed_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MLQUEUE_API_KEYS", raising=False)
    assert Settings().api_keys == []
    a, b = keys.digest(KEY_A), keys.digest(KEY_B)
    monkeypatch.setenv("MLQUEUE_API_KEYS", f'["{a}", "{b.upper()}"]')
    assert Settings().api_keys == [a, b]
    monkeypatch.setenv("MLQUEUE_API_KEYS", f" {a} , {b},")
    assert Settings().api_keys == [a, b]
    monkeypatch.setenv("MLQUEUE_API_KEYS", KEY_A)  # a key pasted instead of its digest
    with pytest.raises(ValidationError) as info:
        Settings()
    assert "entry 0 is not" in str(info.value) and KEY_A not in str(info.value)


def test_the_key_command_prints_a_key_and_its_digest() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gateway.keys"], capture_output=True, text=True, check=True
    ).stdout
    key = out.split("client):")[1].split()[0]
    digest = out.split("entry):")[1].split()[0]
    assert key.startswith("mlq_") and len(key) > 40
    assert keys.digest(key) == digest and keys.match(key, [digest]) == digest


@pytest.fixture
def full_queue(server: fakeredis.FakeServer, state: GatewayState) -> Iterator[fakeredis.FakeRedis]:
    redis = fakeredis.FakeRedis(server=server)
    state.queue_depth = QueueDepth(limit=3, cache_seconds=0)
    redis.rpush(QUEUE, *[b"m"] * 4)
    yield redis
    redis.delete(QUEUE)


def test_a_queue_over_its_depth_refuses_new_jobs_with_503(
    client: TestClient, full_queue: fakeredis.FakeRedis, publisher: FakePublisher
) -> None:
    for path, body in [("/v1/jobs", {"data": [ROW]}), ("/predict", {"data": [ROW]})]:
        response = client.post(path, json=body, headers=bearer(KEY_A))
        assert response.status_code == 503
        assert response.headers["retry-after"] == str(retry_after(4, 3))
        assert response.json()["queue_depth"] == 4
        assert "over its limit of 3" in response.json()["detail"]
    assert publisher.sent == []
    full_queue.ltrim(QUEUE, 0, 2)  # back to the limit: accepted again
    assert client.post("/v1/jobs", json={"data": [ROW]}, headers=bearer(KEY_A)).status_code == 202


def test_the_depth_is_read_once_per_cache_period(server: fakeredis.FakeServer) -> None:
    async def scenario() -> list[int]:
        redis = fakeredis.FakeAsyncRedis(server=server)
        depth = QueueDepth(limit=10, cache_seconds=60)
        seen = [await depth.current(redis)]
        await redis.rpush(QUEUE, b"m")
        seen.append(await depth.current(redis))  # cached
        depth.cache_seconds = 0
        seen.append(await depth.current(redis))
        return seen

    assert asyncio.run(scenario()) == [0, 0, 1]


def test_concurrent_requests_share_one_read_of_the_depth(server: fakeredis.FakeServer) -> None:
    async def scenario() -> tuple[list[int], int]:
        redis = fakeredis.FakeAsyncRedis(server=server)
        await redis.rpush(QUEUE, b"m", b"m")
        depth, reads = QueueDepth(limit=10, cache_seconds=60), 0
        pipeline = redis.pipeline

        def counting(transaction: bool = True) -> Any:
            nonlocal reads
            reads += 1
            return pipeline(transaction)

        redis.pipeline = counting  # type: ignore[method-assign]
        seen = await asyncio.gather(*(depth.current(redis) for _ in range(50)))
        await redis.delete(QUEUE)
        return seen, reads

    assert asyncio.run(scenario()) == ([2] * 50, 1)


def test_retry_after_grows_with_the_excess() -> None:
    assert retry_after(101, 100) == 2
    assert retry_after(200, 100) == 12
    assert retry_after(10**9, 100) == 60


@pytest.mark.parametrize("value", [",", " ", "[]", '[""]', " , ,"])
def test_keys_set_but_holding_no_digest_stop_startup(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    for name in ("MLQUEUE_API_KEYS", "MLQUEUE_ADMIN_KEYS"):
        monkeypatch.setenv(name, value)
        with pytest.raises(ValidationError, match="is set but holds no SHA-256 digest"):
            Settings()
        monkeypatch.delenv(name)


def test_startup_logs_whether_auth_is_on(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    off = settings.model_copy(update={"api_keys": []})
    admin_only = off.model_copy(update={"admin_keys": [keys.digest(KEY_A)]})
    with caplog.at_level("INFO", "gateway.keys"):
        for each in (settings, off, admin_only):
            keys.log_auth_state(each)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "auth is on: 2 API keys, 0 admin keys"),
        ("WARNING", "auth is off: MLQUEUE_API_KEYS is unset, every request is let in"),
        ("INFO", "auth is on: 0 API keys, 1 admin keys"),
    ]


ADMIN = keys.new_key()


@pytest.fixture
def ownerless(runtime: Runtime) -> str:
    """A job enqueued directly through Celery: it has no owner."""
    job_id = str(uuid.uuid4())
    run_job(runtime, job_id, [ROW], "default")
    return job_id


@pytest.mark.parametrize("key", [KEY_A, KEY_B])
def test_ownerless_jobs_are_404_to_ordinary_keys(
    settings: Settings, app: FastAPI, ownerless: str, key: str
) -> None:
    client = TestClient(app)
    for method, path in [
        ("GET", f"/v1/jobs/{ownerless}"),
        ("GET", f"/v1/jobs/{ownerless}/result"),
        ("DELETE", f"/v1/jobs/{ownerless}"),
    ]:
        response = client.request(method, path, headers=bearer(key))
        assert response.status_code == 404, (method, path, response.text)


def test_ownerless_jobs_are_visible_to_admin_keys(
    settings: Settings, server: fakeredis.FakeServer, publisher: FakePublisher, ownerless: str
) -> None:
    admin = settings.model_copy(update={"admin_keys": [keys.digest(ADMIN)]})
    app = create_app(admin)
    redis = fakeredis.FakeAsyncRedis(server=server)
    state = GatewayState.create(admin, redis=redis, publisher=publisher)
    app.state.gateway = state
    client = TestClient(app)
    response = client.get(f"/v1/jobs/{ownerless}/result", headers=bearer(ADMIN))
    assert response.status_code == 200, response.text
    assert response.json()["data"] == [sum(ROW)]
    # The admin key is a key like any other: its own jobs stay its own.
    job_id = submit(client, ADMIN)
    assert client.get(f"/v1/jobs/{job_id}", headers=bearer(ADMIN)).status_code == 200
    assert client.get(f"/v1/jobs/{job_id}", headers=bearer(KEY_A)).status_code == 404
    assert client.get(f"/v1/jobs/{ownerless}", headers=bearer(KEY_A)).status_code == 404
