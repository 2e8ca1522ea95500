"""Submitting jobs to the stack and collecting their results, with every wait bounded."""

from __future__ import annotations

import csv
import io
import time

import httpx
import numpy as np

FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]


def random_rows(n: int, seed: int) -> list[list[float]]:
    """Rows on the demo model's scale (the diabetes features are centred, about 0.05 wide)."""
    return np.random.default_rng(seed).normal(0, 0.05, (n, len(FEATURES))).tolist()  # type: ignore[no-any-return]


def csv_body(ids: list[str], rows: list[list[float]]) -> bytes:
    lines = ["id," + ",".join(FEATURES)]
    lines += [f"{i}," + ",".join(map(repr, row)) for i, row in zip(ids, rows, strict=True)]
    return ("\n".join(lines) + "\n").encode()


def submit_csv(http: httpx.Client, body: bytes) -> str:
    response = http.post(
        "/v1/jobs/csv",
        params={"id_column": "id"},
        files={"file": ("in.csv", body, "text/csv")},
        timeout=300,
    )
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


def result(http: httpx.Client, job_id: str, timeout: float = 180) -> httpx.Response:
    """The job's final answer (200 or 409), long-polling until `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        response = http.get(f"/v1/jobs/{job_id}/result", params={"wait": max(0, min(20, left))})
        if response.status_code != 202 or left <= 0:
            return response


def csv_result(http: httpx.Client, job_id: str) -> list[list[str]]:
    response = result(http, job_id)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    return list(csv.reader(io.StringIO(response.text)))
