"""`POST /v1/jobs/{id}/retry`: a failed or cancelled JSON job runs again as a new job."""

from __future__ import annotations

import fakeredis
import pytest
from fastapi.testclient import TestClient

from shared import jobstore
from tests.unit.conftest import FakePublisher

ROWS = [[0.01 * i + r for i in range(10)] for r in range(3)]
CSV = b"age,sex,bmi,bp,s1,s2,s3,s4,s5,s6\n0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0\n"


def submit(client: TestClient) -> str:
    response = client.post("/v1/jobs", json={"data": ROWS})
    assert response.status_code == 202
    return str(response.json()["job_id"])


def fail(server: fakeredis.FakeServer, job_id: str) -> None:
    """What the worker does when a job fails (after it started; its rows stay for a retry)."""
    redis = fakeredis.FakeRedis(server=server)
    start = jobstore.start_call(job_id, model="demo:1", n_rows=3, ttl=60, max_attempts=3)
    failure = jobstore.failure_call(job_id, error_type="ModelError", message="boom", ttl=60)
    for script, call in ((jobstore.START, start), (jobstore.FINISH, failure)):
        redis.eval(script, len(call.keys), *call.keys, *call.args)


@pytest.mark.parametrize("how", ["cancelled", "failed"])
def test_a_retry_runs_the_same_rows_as_a_new_job(
    client: TestClient, publisher: FakePublisher, server: fakeredis.FakeServer, how: str
) -> None:
    publisher.run = False
    old = submit(client)
    if how == "cancelled":
        assert client.delete(f"/v1/jobs/{old}").status_code == 200
    else:
        fail(server, old)
    assert client.get(f"/v1/jobs/{old}").json()["status"] == how
    publisher.run = True
    response = client.post(f"/v1/jobs/{old}/retry")
    assert response.status_code == 202, response.text
    new = response.json()["job_id"]
    assert new != old and response.headers["location"] == f"/v1/jobs/{new}"
    view = client.get(f"/v1/jobs/{new}").json()
    assert view["retry_of"] == old and view["version"] == "1"
    result = client.get(f"/v1/jobs/{new}/result").json()
    assert result["data"] == pytest.approx([sum(r) for r in ROWS])
    assert client.get(f"/v1/jobs/{old}").json()["retry_of"] is None


def test_a_succeeded_job_is_a_409_and_its_rows_are_not_kept(
    client: TestClient, server: fakeredis.FakeServer
) -> None:
    job_id = submit(client)
    response = client.post(f"/v1/jobs/{job_id}/retry")
    assert response.status_code == 409
    assert "is succeeded: only failed or cancelled jobs" in response.json()["detail"]
    record = fakeredis.FakeRedis(server=server).hgetall(jobstore.job_key(job_id))
    assert b"rows" not in record and b"spec" not in record


def test_a_queued_job_is_a_409(client: TestClient, publisher: FakePublisher) -> None:
    publisher.run = False
    job_id = submit(client)
    response = client.post(f"/v1/jobs/{job_id}/retry")
    assert response.status_code == 409 and "is queued" in response.json()["detail"]


def test_a_csv_job_must_be_uploaded_again(client: TestClient, publisher: FakePublisher) -> None:
    publisher.run = False
    files = {"file": ("d.csv", CSV, "text/csv")}
    job_id = client.post("/v1/jobs/csv", files=files).json()["job_id"]
    assert client.delete(f"/v1/jobs/{job_id}").status_code == 200
    response = client.post(f"/v1/jobs/{job_id}/retry")
    assert response.status_code == 409 and "upload it again" in response.json()["detail"]


def test_an_unknown_job_is_a_404(client: TestClient) -> None:
    assert client.post("/v1/jobs/nope/retry").status_code == 404
