"""Feature values: finite and within float32's range on every path, and one job's rows can
never fail its neighbours in a batch."""

from __future__ import annotations

import asyncio
from typing import Any

import fakeredis
import pytest
from fastapi.testclient import TestClient

from gateway.batcher import Batcher
from gateway.store import JobStore
from shared import jobstore
from shared.csvformat import parse_small
from shared.errors import InvalidInput
from worker.inference import to_matrix

FEATURES = [f"f{i}" for i in range(10)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("1e39", "value 1e+39 is outside the float32 range"),
        ("-3.5e38", "value -3.5e+38 is outside the float32 range"),
        ("1" + "0" * 400, "value 1" + "0" * 38 + "\u2026 is outside the float32 range"),
        ("1e999", "non-finite value inf"),
    ],
)
def test_a_feature_outside_float32_is_422_naming_row_and_column(
    client: TestClient, value: str, says: str
) -> None:
    body = '{"data": [[0,0,0,0,0,0,0,0,0,0], [0,0,0,' + value + ",0,0,0,0,0,0]]}"
    for path in ("/v1/jobs", "/predict"):
        response = client.post(path, content=body, headers={"content-type": "application/json"})
        assert response.status_code == 422, response.text
        assert response.json()["detail"].startswith(f"data: row 1, column 3: {says}")


def test_a_huge_integer_within_float32_is_predicted(client: TestClient) -> None:
    # 10**26 passes validation but no 64-bit JSON encoder takes it: it travels as a float.
    response = client.post("/predict", json={"data": [[10**26] + [0] * 9]})
    assert response.status_code == 200, response.text
    assert response.json() == {"data": [1e26]}  # the mock model sums each row


def test_the_float32_bound_itself_is_accepted(client: TestClient) -> None:
    response = client.post("/predict", json={"data": [[3.4028235e38] + [0] * 9]})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("value", [1e39, float("inf"), float("nan"), 10**400, True, "1"])
def test_a_direct_task_refuses_a_bad_feature_naming_row_and_column(value: Any) -> None:
    with pytest.raises(InvalidInput, match=r"^row 1: column 2: "):
        to_matrix([[0.0] * 3, [0.0, 0.0, value]], 3)


def test_a_csv_cell_outside_float32_names_line_and_column() -> None:
    data = b"0,0,0,0,0,0,0,0,0,0\n0,0,0,0,0,0,0,0,4e38,0\n"
    with pytest.raises(InvalidInput, match=r"^line 2, column 9 \(f8\): value 4e\+38 is outside"):
        parse_small(data, FEATURES, 100)


@pytest.mark.anyio
async def test_a_job_that_cannot_be_serialized_fails_alone_in_its_batch() -> None:
    sent: list[dict[str, Any]] = []

    async def publish(message_id: str, kwargs: dict[str, Any], queue: str) -> None:
        sent.append(kwargs)

    store = JobStore(fakeredis.FakeAsyncRedis(), ttl=60)
    batcher = Batcher(store, publish, max_rows=100, max_wait=0.05)

    def record(job_id: str) -> dict[str, str]:
        return jobstore.new_record(job_id, kind="json", model="demo", n_rows=1)

    good = asyncio.create_task(batcher.add(record("good"), [[1.0, 2**70]], "demo:1"))
    bad = asyncio.create_task(batcher.add(record("bad"), [[1.0, object()]], "demo:1"))  # type: ignore[list-item]
    await asyncio.wait_for(good, 5)
    with pytest.raises(InvalidInput, match="cannot be serialized"):
        await bad
    await batcher.close()
    assert [[job["id"] for job in kwargs["jobs"]] for kwargs in sent] == [["good"]]
    assert sent[0]["jobs"][0]["rows"] == [[1.0, float(2**70)]]
