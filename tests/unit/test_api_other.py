"""Models, health probes and the article's synchronous façade."""

from __future__ import annotations

import time
from pathlib import Path

import fakeredis
import pytest
from fastapi.testclient import TestClient

from gateway.state import GatewayState
from shared.jobstore import WORKERS
from shared.registry import Registry
from shared.schemas import ModelInfo
from shared.tasks import QUEUE_HIGH, QUEUE_LOW, WEBHOOK_QUEUE
from tests.unit.conftest import FakePublisher

ROW = [0.01 * i for i in range(10)]


def test_models_lists_the_manifest(client: TestClient, demo_info: ModelInfo) -> None:
    body = client.get("/v1/models").json()
    assert body["default"] == "demo"
    [model] = body["models"]
    assert model["name"] == "demo" and model["version"] == "1"
    assert model["n_features"] == 10
    assert model["feature_names"] == ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
    assert model["metrics"] == demo_info.metrics and set(model["metrics"]) == {"r2", "mae"}
    assert model["sha256"] == demo_info.sha256


def test_healthz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_needs_a_worker_heartbeat(client: TestClient, server: fakeredis.FakeServer) -> None:
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["reasons"] == ["no worker has sent a heartbeat recently"]
    fakeredis.FakeRedis(server=server).zadd(WORKERS, {"celery@test": time.time()})
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {
        "redis": "ok",
        "workers": 1,
        "queue_depth": 0,
        "model": "demo:1",
    }
    # Jobs waiting at any priority count; webhook deliveries are not jobs.
    redis = fakeredis.FakeRedis(server=server)
    redis.rpush(QUEUE_HIGH, "h")
    redis.rpush(QUEUE_LOW, "l1", "l2")
    redis.rpush(WEBHOOK_QUEUE, "w")
    assert client.get("/readyz").json()["checks"]["queue_depth"] == 3
    redis.delete(QUEUE_HIGH, QUEUE_LOW, WEBHOOK_QUEUE)


def test_readyz_says_redis_is_down(client: TestClient, server: fakeredis.FakeServer) -> None:
    server.connected = False
    response = client.get("/readyz")
    assert response.status_code == 503
    assert "Redis is unreachable" in response.json()["reasons"]


def test_redis_down_makes_submit_a_503_with_retry_after(
    client: TestClient, server: fakeredis.FakeServer
) -> None:
    server.connected = False
    response = client.post("/v1/jobs", json={"data": [ROW]})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert "redis://" not in response.text


@pytest.mark.parametrize("n_rows", range(1, 10))
def test_legacy_predict(client: TestClient, n_rows: int) -> None:
    data = [[float(i + j) for j in range(10)] for i in range(n_rows)]
    response = client.post("/predict", json={"data": data})
    assert response.status_code == 200
    assert response.json() == {"data": [sum(r) for r in data]}


@pytest.mark.parametrize("width", [w for w in range(1, 20) if w != 10])
def test_legacy_predict_wrong_width(client: TestClient, width: int) -> None:
    assert client.post("/predict", json={"data": [[1.0] * width]}).status_code == 422


def test_legacy_predict_times_out_as_503(client: TestClient, publisher: FakePublisher) -> None:
    publisher.run = False
    response = client.post("/predict", json={"data": [ROW]})
    assert response.status_code == 503
    assert "no result within 2 s; poll /v1/jobs/" in response.json()["detail"]


def csv_upload(client: TestClient, text: str | bytes) -> tuple[int, dict[str, object]]:
    data = text.encode() if isinstance(text, str) else text
    response = client.post("/predict_csv", files={"csv_file": ("x.csv", data, "text/csv")})
    return response.status_code, response.json()


def test_legacy_predict_csv_without_header(client: TestClient) -> None:
    lines = [",".join(str(v + i) for v in ROW) for i in range(3)]
    status, body = csv_upload(client, "\n".join(lines) + "\n")
    assert status == 200
    assert body["data"] == pytest.approx([sum(ROW) + 10 * i for i in range(3)])


def test_legacy_predict_csv_with_header_in_any_order(client: TestClient) -> None:
    names = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
    order = list(reversed(range(10)))
    header = ",".join(names[i] for i in order)
    line = ",".join(str(ROW[i]) for i in order)
    status, body = csv_upload(client, f"\ufeff{header}\r\n{line}\r\n\r\n")
    assert status == 200
    assert body["data"] == pytest.approx([sum(ROW)])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "the file is empty"),
        ("1,2,3\n", "line 1: expected 10 columns, got 3"),
        (
            "0,1,2,3,4,5,6,7,8,9\n0,1,2,x,4,5,6,7,8,9\n",
            "line 2, column 4 (bp): non-numeric value 'x'",
        ),
        ("0,1,2,3,4,5,6,7,8,9\n0,1,2,3,4,5,6,7,,9\n", "line 2, column 9 (s5): empty value"),
        ("0,1,2,3,4,5,6,7,8,9\n0,1,2,3,inf,5,6,7,8,9\n", "line 2, column 5 (s1): non-finite"),
        ("import os\nprint('hello')\n", "header lacks the model's features"),
    ],
)
def test_legacy_predict_csv_errors_name_line_and_column(
    client: TestClient, text: str, expected: str
) -> None:
    status, body = csv_upload(client, text)
    assert status == 422
    assert expected in str(body["detail"])


def test_legacy_predict_csv_refuses_binary(client: TestClient) -> None:
    status, body = csv_upload(client, b"\x89PNG\r\n\x1a\n\x00\x00\x00")
    assert status == 422
    assert "not text" in str(body["detail"])


def test_readyz_says_the_default_model_is_missing(
    state: GatewayState, client: TestClient, server: fakeredis.FakeServer, tmp_path: Path
) -> None:
    fakeredis.FakeRedis(server=server).zadd(WORKERS, {"celery@test": time.time()})
    state.registry = Registry(tmp_path, "demo")
    response = client.get("/readyz")
    assert response.status_code == 503
    [reason] = response.json()["reasons"]
    assert reason == "default model 'demo' unavailable: unknown model 'demo' (available: none)"
    assert "model" not in response.json()["checks"]


def test_readyz_ignores_a_stale_heartbeat_and_lists_every_reason(
    state: GatewayState, client: TestClient, server: fakeredis.FakeServer, tmp_path: Path
) -> None:
    fakeredis.FakeRedis(server=server).zadd(WORKERS, {"celery@gone": time.time() - 60})
    state.registry = Registry(tmp_path, "demo")
    body = client.get("/readyz").json()
    assert body["status"] == "not ready"
    assert body["checks"]["workers"] == 0
    assert body["reasons"][0] == "no worker has sent a heartbeat recently"
    assert body["reasons"][1].startswith("default model 'demo' unavailable: ")
