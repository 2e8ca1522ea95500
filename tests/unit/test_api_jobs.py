"""The `/v1/jobs` contract, through the gateway with a fake publisher and a summing mock model."""

from __future__ import annotations

import itertools
import math
import random

import pytest
from fastapi.testclient import TestClient

from tests.unit.conftest import FakePublisher
from worker.predict import run_batch

N_FEATURES = 10


def rows(n: int, width: int = N_FEATURES) -> list[list[float]]:
    return [[random.random() for _ in range(width)] for _ in range(n)]


def submit(client: TestClient, data: object, **extra: object) -> dict[str, object]:
    response = client.post("/v1/jobs", json={"data": data, **extra})
    assert response.status_code == 202, response.text
    body = response.json()
    assert response.headers["location"] == f"/v1/jobs/{body['job_id']}"
    return body


@pytest.mark.parametrize("n_rows", range(1, 10))
def test_submit_then_fetch_gives_one_prediction_per_row(client: TestClient, n_rows: int) -> None:
    data = rows(n_rows)
    job = submit(client, data)
    result = client.get(f"/v1/jobs/{job['job_id']}/result")
    assert result.status_code == 200
    body = result.json()
    assert body["status"] == "succeeded"
    assert body["model"] == "demo" and body["version"] == "1"
    assert body["data"] == pytest.approx([sum(r) for r in data])


@pytest.mark.parametrize(
    ("n_rows", "width"),
    list(itertools.product(range(1, 10), [w for w in range(1, 20) if w != N_FEATURES])),
)
def test_every_wrong_width_is_a_422_naming_the_row(
    client: TestClient, publisher: FakePublisher, n_rows: int, width: int
) -> None:
    response = client.post("/v1/jobs", json={"data": rows(n_rows, width)})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert f"row 0 has {width} features, expected {N_FEATURES}" in detail
    assert publisher.sent == []  # nothing reached the queue


@pytest.mark.parametrize(
    ("value", "what"),
    [
        ("1.5", "number"),
        (None, "number"),
        (True, "number"),
        ([1.0], "number"),
        ({"x": 1}, "number"),
    ],
)
def test_non_numeric_values_are_422_naming_row_and_column(
    client: TestClient, value: object, what: str
) -> None:
    data = rows(3)
    data[2][7] = value  # type: ignore[call-overload]
    response = client.post("/v1/jobs", json={"data": data})
    assert response.status_code == 422
    body = response.json()
    assert body["detail"].startswith("data: row 2, column 7:")
    assert what in body["detail"]
    assert body["errors"][0]["loc"][:4] == ["body", "data", 2, 7]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_values_are_422(client: TestClient, literal: str) -> None:
    # Python's JSON parser accepts these literals, so the schema must refuse them.
    body = '{"data": [[' + ", ".join(["0.1"] * 4 + [literal] + ["0.1"] * 5) + "]]}"
    response = client.post("/v1/jobs", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"].startswith("data: row 0, column 4:")
    assert "finite" in response.json()["detail"]


@pytest.mark.parametrize(
    "payload",
    [{"data": []}, {}, {"data": [[]]}, {"data": "1,2"}, {"data": [1, 2]}, {"rows": [[1.0]]}],
)
def test_malformed_bodies_are_422(client: TestClient, payload: dict[str, object]) -> None:
    response = client.post("/v1/jobs", json=payload)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 422


def test_ragged_rows_name_each_bad_row(client: TestClient) -> None:
    data = rows(5)
    data[1] = data[1][:3]
    data[4] = [*data[4], 1.0]
    detail = client.post("/v1/jobs", json={"data": data}).json()["detail"]
    assert "row 1 has 3 features" in detail and "row 4 has 11 features" in detail


def test_more_rows_than_the_limit_is_a_422(client: TestClient) -> None:
    response = client.post("/v1/jobs", json={"data": rows(101)})
    assert response.status_code == 422
    assert "101 rows exceed the limit of 100" in response.json()["detail"]


def test_unknown_model_is_a_422_listing_the_models(client: TestClient) -> None:
    response = client.post("/v1/jobs", json={"data": rows(1), "model": "nope"})
    assert response.status_code == 422
    assert response.json()["detail"] == "unknown model 'nope' (available: demo)"


def test_a_model_version_can_be_named(client: TestClient) -> None:
    job = submit(client, rows(1), model="demo:1")
    assert client.get(f"/v1/jobs/{job['job_id']}").json()["version"] == "1"
    assert client.post("/v1/jobs", json={"data": rows(1), "model": "demo:7"}).status_code == 422


def test_body_over_the_limit_is_a_413(client: TestClient) -> None:
    response = client.post(
        "/v1/jobs", content=b"[" * 70_000, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert "65536 bytes" in response.json()["detail"]


def test_job_view_shows_status_rows_model_and_times(client: TestClient) -> None:
    job = submit(client, rows(4))
    view = client.get(f"/v1/jobs/{job['job_id']}").json()
    assert view["status"] == "succeeded" and view["kind"] == "json"
    assert view["n_rows"] == 4 and view["model"] == "demo"
    assert view["created_at"] <= view["started_at"] <= view["finished_at"]
    assert view["error"] is None


def test_unknown_ids_are_404(client: TestClient) -> None:
    for path in ("/v1/jobs/{}", "/v1/jobs/{}/result", "/v1/jobs/{}/result?wait=0.2"):
        response = client.get(path.format("2b1e0a2c-6c34-4a37-9d0a-5b2a4e3c1f00"))
        assert response.status_code == 404
        assert response.json()["title"] == "JobNotFound"
    assert client.delete("/v1/jobs/nope").status_code == 404


def test_unfinished_job_result_is_202_with_its_status(
    client: TestClient, publisher: FakePublisher
) -> None:
    publisher.run = False
    job = submit(client, rows(2))
    response = client.get(f"/v1/jobs/{job['job_id']}/result?wait=0.3")
    assert response.status_code == 202
    assert response.json()["status"] == "queued"
    assert response.headers["retry-after"] == "1"


def test_cancel_a_queued_job_then_no_result(client: TestClient, publisher: FakePublisher) -> None:
    publisher.run = False
    job = submit(client, rows(2))
    response = client.delete(f"/v1/jobs/{job['job_id']}")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    # The worker then picks the message up: it must not predict, nor overwrite the cancel.
    summary = run_batch(publisher.runtime, **publisher.sent[0]["kwargs"])
    assert summary == {"jobs": 1, "succeeded": 0, "failed": 0}
    result = client.get(f"/v1/jobs/{job['job_id']}/result")
    assert result.status_code == 409
    assert result.json()["job"]["status"] == "cancelled"
    assert client.delete(f"/v1/jobs/{job['job_id']}").status_code == 409


def test_cancel_a_finished_job_is_409(client: TestClient) -> None:
    job = submit(client, rows(1))
    response = client.delete(f"/v1/jobs/{job['job_id']}")
    assert response.status_code == 409
    assert "already succeeded" in response.json()["detail"]


def test_a_failed_job_result_is_409_with_its_error(
    client: TestClient, publisher: FakePublisher
) -> None:
    publisher.runtime.models._loader = lambda path: BrokenModel()  # type: ignore[assignment]
    job = submit(client, rows(2))
    response = client.get(f"/v1/jobs/{job['job_id']}/result")
    assert response.status_code == 409
    error = response.json()["job"]["error"]
    assert error == {"type": "PredictionFailed", "message": "ValueError: model exploded"}


class BrokenModel:
    n_features = 10

    def predict(self, X: object) -> object:
        raise ValueError("model exploded")


def test_predictions_are_plain_finite_floats(client: TestClient) -> None:
    job = submit(client, [[1.0] * 10, [2] * 10])
    data = client.get(f"/v1/jobs/{job['job_id']}/result").json()["data"]
    assert data == [10.0, 20.0] and all(math.isfinite(v) for v in data)


def test_the_published_message_pins_the_model_version(
    client: TestClient, publisher: FakePublisher
) -> None:
    data = rows(1)
    job = submit(client, data)
    assert publisher.sent == [
        {
            "name": "mlqueue.predict_batch",
            "task_id": job["job_id"],
            "kwargs": {"jobs": [{"id": job["job_id"], "rows": data}], "model": "demo:1"},
            "queue": "mlqueue",
        }
    ]
