"""End to end through the published port: JSON jobs, a 200k-row CSV, keys, metrics, readiness."""

from __future__ import annotations

import re

import pytest

from tests.docker.conftest import Stack
from tests.docker.jobs import csv_body, csv_result, random_rows, result, submit_csv


def test_json_jobs_return_the_models_predictions(stack: Stack) -> None:
    batches = [random_rows(n, seed=n) for n in (1, 7, 100, 2500)]
    with stack.client() as http:
        job_ids = []
        for rows in batches:
            response = http.post("/v1/jobs", json={"data": rows})
            assert response.status_code == 202, response.text
            job_ids.append(response.json()["job_id"])
        for job_id, rows in zip(job_ids, batches, strict=True):
            response = result(http, job_id)
            assert response.status_code == 200, response.text
            assert response.json()["data"] == stack.expected(rows)
            assert response.json()["model"] == "demo"


@pytest.mark.timeout(600)
def test_a_200k_row_csv_keeps_ids_and_order(stack: Stack) -> None:
    rows = random_rows(200_000, seed=12)
    ids = [f"row-{n}" for n in range(len(rows))]
    with stack.client(timeout=300) as http:
        job_id = submit_csv(http, csv_body(ids, rows))
        out = csv_result(http, job_id)
        view = http.get(f"/v1/jobs/{job_id}").json()
    assert view["status"] == "succeeded" and view["n_rows"] == len(rows)
    assert out[0] == ["id", "prediction"]
    assert [r[0] for r in out[1:]] == ids
    assert [float(r[1]) for r in out[1:]] == stack.expected(rows)


def test_no_key_is_401_and_another_keys_job_is_404(stack: Stack) -> None:
    with stack.client() as http:
        job_id = http.post("/v1/jobs", json={"data": random_rows(2, seed=3)}).json()["job_id"]
        assert result(http, job_id).status_code == 200
    with stack.client(key="") as anonymous:
        anonymous.headers.pop("Authorization")
        for method, path in [("GET", f"/v1/jobs/{job_id}"), ("POST", "/v1/jobs")]:
            response = anonymous.request(method, path, json={"data": [[0.0] * 10]})
            assert response.status_code == 401, response.text
            assert response.headers["content-type"].startswith("application/problem+json")
    with stack.client(key=stack.other_key) as other:
        for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/result"):
            response = other.get(path)
            assert response.status_code == 404, response.text
            assert job_id in response.json()["detail"]
        assert other.delete(f"/v1/jobs/{job_id}").status_code == 404
    with stack.client() as http:
        assert http.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded"


def test_metrics_count_the_jobs_and_need_a_key(stack: Stack) -> None:
    with stack.client() as http:
        job_id = http.post("/v1/jobs", json={"data": random_rows(3, seed=4)}).json()["job_id"]
        assert result(http, job_id).status_code == 200
        response = http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    pattern = r"^mlqueue_jobs_submitted_total\{[^}]*\} ([0-9.e+]+)$"
    submitted = re.search(pattern, response.text, re.MULTILINE)
    assert submitted is not None and float(submitted.group(1)) >= 1, response.text[:2000]
    with stack.client(key=stack.other_key) as other:
        assert other.get("/metrics").status_code == 200
    with stack.client() as anonymous:
        anonymous.headers.pop("Authorization")
        assert anonymous.get("/metrics").status_code == 401


def test_readyz_sees_redis_and_both_workers(stack: Stack) -> None:
    with stack.client() as http:
        response = http.get("/readyz")
        assert response.status_code == 200, response.text
        assert http.get("/healthz").json() == {"status": "ok"}
    body = response.json()
    assert body["checks"]["redis"] == "ok" and body["checks"]["model"] == "demo:1", body
    assert body["checks"]["workers"] == len(stack.containers("worker")) == 2, body
