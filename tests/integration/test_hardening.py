"""Issue 11's defects, tried on the real system (uvicorn, a Celery worker, Redis) as a careless
or hostile client would: each answer is a clear 4xx/5xx naming the problem, never a 500."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from redis import Redis

from shared import jobstore
from tests.integration.conftest import System, consumer_paused, running_system, wait_for
from worker.sklearn_model import SklearnModel

pytestmark = pytest.mark.integration
FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
IDLE_TIMEOUT = 2


@pytest.fixture(scope="module")
def hard(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[System]:
    with running_system(
        tmp_path_factory.mktemp("hardening"),
        model_dir,
        db_offset=4,
        csv_chunk_rows="100",
        upload_idle_timeout=str(IDLE_TIMEOUT),
        max_uploads_per_key="1",
        max_long_polls_per_key="1",
    ) as system:
        yield system


@pytest.fixture
def http(hard: System) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=hard.base_url, timeout=60) as client:
        yield client


def csv_lines(rows: list[list[float]], bad: dict[int, str] | None = None) -> bytes:
    lines = [",".join(FEATURES)] + [",".join(map(repr, r)) for r in rows]
    for i, cell in (bad or {}).items():  # data line i (0-based) gets `cell` as its first value
        lines[i + 1] = cell + lines[i + 1][lines[i + 1].index(",") :]
    return ("\n".join(lines) + "\n").encode()


@pytest.mark.parametrize(
    "body",
    [
        b"--BOUNDARY\r\n[]--BOUNDARY--",
        b"--BOUNDARY\r\nno colon here\r\n\r\n1,2\r\n--BOUNDARY--\r\n",
        b"--BOUNDARY\r\nContent-Disposition: form-data; name=file; x="
        + b"a" * 10_000
        + b"\r\n\r\n1,2\r\n--BOUNDARY--\r\n",
    ],
    ids=["junk after the boundary line", "a header line without a colon", "a huge part header"],
)
def test_a_malformed_multipart_upload_is_400_naming_the_defect(
    http: httpx.Client, body: bytes
) -> None:
    headers = {"content-type": "multipart/form-data; boundary=BOUNDARY"}
    response = http.post("/v1/jobs/csv", content=body, headers=headers)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["title"] == "MalformedRequest"
    assert problem["detail"].startswith("malformed multipart body: ")


def test_a_huge_cell_is_quoted_in_40_characters_and_errors_come_in_pages(
    hard: System, http: httpx.Client, diabetes_rows: list[list[float]]
) -> None:
    rows = diabetes_rows[:300]
    huge = "1" * 130_000  # parses as infinity
    data = csv_lines(rows, {5: huge, **{i: "x" for i in range(10, 300, 2)}})
    form = {"on_error": "skip"}
    response = http.post("/v1/jobs/csv", data=form, files={"file": ("a.csv", data, "text/csv")})
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    assert http.get(f"/v1/jobs/{job_id}/result", params={"wait": 30}).status_code == 200
    first = http.get(f"/v1/jobs/{job_id}/errors", params={"limit": 100})
    assert len(first.content) < 20_000
    page = first.json()
    assert page["rows_skipped"] == 146
    assert page["errors"][0] == {
        "line": 7,
        "column": 1,
        "name": "age",
        "msg": "non-finite value '" + "1" * 39 + "\u2026'",
    }
    lines = [e["line"] for e in page["errors"]]
    second = http.get(f"/v1/jobs/{job_id}/errors", params={"cursor": page["next_cursor"]}).json()
    assert second["next_cursor"] is None
    lines += [e["line"] for e in second["errors"]]
    assert lines == [7, *range(12, 302, 2)]
    # Scored, its chunks no longer count as waiting in Redis.
    assert hard.redis().zcard("mlqueue:waiting-chunks") == 0


def stall_upload(hard: System, rows: list[list[float]]) -> socket.socket:
    """An upload whose client sends `rows` as a CSV file's first lines, then nothing."""
    part = b'--xx\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n\r\n'
    sent = part + csv_lines(rows)
    head = (
        "POST /v1/jobs/csv HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: multipart/form-data; boundary=xx\r\n"
        f"Content-Length: {len(sent) + 100_000}\r\nConnection: close\r\n\r\n"
    ).encode()
    port = int(hard.base_url.rsplit(":", 1)[1])
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(head + sent)
    return s


def read_answer(s: socket.socket) -> tuple[bytes, dict[str, Any]]:
    """The status line and problem body the server answers (then it closes)."""
    answer = b""
    while chunk := s.recv(65536):
        answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    return status_line, json.loads(rest.partition(b"\r\n\r\n")[2])


def test_a_stalled_upload_is_408_and_its_job_fails_with_its_chunks_deleted(
    hard: System, diabetes_rows: list[list[float]]
) -> None:
    # Two chunks cut and stored, then silence.
    with consumer_paused(hard), stall_upload(hard, diabetes_rows[:250]) as s:
        status_line, problem = read_answer(s)
        assert b" 408 " in status_line, (status_line, problem)
        assert problem["title"] == "UploadStalled"
        assert f"nothing for {IDLE_TIMEOUT} s" in problem["detail"]
        key = jobstore.job_key(str(problem["job_id"]))
        redis = hard.redis()
        assert redis.hget(key, "status") == b"failed"
        assert redis.hget(key, "error_type") == b"UploadStalled"
        assert redis.keys(f"{key}:*") == []  # its stored chunks are gone
    wait_for(lambda: hard.redis().llen("mlqueue") == 0)  # their messages are skipped
    assert hard.redis().keys(f"{key}:*") == []


def stuck_job(redis: Redis, job_id: str, attempts: int, rows: list[list[float]] | None) -> None:
    """A job whose outcome was lost after its message was acknowledged: `running`, nobody on
    it, begun long ago (as a worker would leave it when Redis refused the result's write)."""
    record = jobstore.new_record(job_id, kind="json" if rows else "task", model="demo", n_rows=1)
    record.update(status="running", started_at=repr(time.time() - 100), attempts=str(attempts))
    if rows is not None:
        record.update(spec="demo:1", rows=json.dumps(rows), version="1")
    redis.hset(jobstore.job_key(job_id), mapping=record)
    redis.expire(jobstore.job_key(job_id), 3600)
    redis.zadd(jobstore.RUNNING, {job_id: time.time() - 100})


def test_a_job_stuck_running_is_sent_again_or_failed_never_left_running(
    hard: System, http: httpx.Client, model_dir: Path, diabetes_rows: list[list[float]]
) -> None:
    redis = hard.redis()
    rows = diabetes_rows[:3]
    stuck_job(redis, "stuck-once", 1, rows)
    stuck_job(redis, "stuck-thrice", 3, rows)
    stuck_job(redis, "stuck-direct", 1, None)
    # The reaper (a heartbeat chore of the worker) sends the first again: it succeeds.
    answer = http.get("/v1/jobs/stuck-once/result", params={"wait": 30})
    assert answer.status_code == 200, answer.text
    estimator = SklearnModel.load(model_dir / "demo" / "1" / "model.skops")
    assert answer.json()["data"] == [float(v) for v in estimator.predict(np.asarray(rows))]
    # The one out of attempts, and the one with nothing to send, fail saying why.
    failed = http.get("/v1/jobs/stuck-thrice/result", params={"wait": 30})
    assert failed.status_code == 409
    assert failed.json()["job"]["error"]["type"] == "TooManyAttempts"
    lost = http.get("/v1/jobs/stuck-direct/result", params={"wait": 30})
    assert lost.status_code == 409
    assert lost.json()["job"]["error"]["type"] == "JobLost"
    assert "submit it again" in lost.json()["detail"]
    assert redis.zrange(jobstore.RUNNING, 0, -1) == []


def test_a_key_over_its_limits_gets_429_with_retry_after(
    hard: System, http: httpx.Client, diabetes_rows: list[list[float]]
) -> None:
    # This system allows one upload and one long poll per key at a time.
    data = csv_lines(diabetes_rows[:50])
    with stall_upload(hard, diabetes_rows[:250]) as stalled:
        wait_for(lambda: hard.redis().zcard("mlqueue:quota:uploads:") == 1)
        second = http.post("/v1/jobs/csv", files={"file": ("a.csv", data, "text/csv")})
        assert second.status_code == 429, second.text
        assert second.headers["retry-after"] == "5"
        assert "already has 1 uploads in progress" in second.json()["detail"]
        assert b" 408 " in read_answer(stalled)[0]
    # The stalled upload's slot was given back: the same upload is taken now.
    third = http.post("/v1/jobs/csv", files={"file": ("a.csv", data, "text/csv")})
    assert third.status_code == 202, third.text

    with consumer_paused(hard):
        job_id = http.post("/v1/jobs", json={"data": diabetes_rows[:1]}).json()["job_id"]
        with httpx.Client(base_url=hard.base_url, timeout=30) as other:
            pool = ThreadPoolExecutor(1)
            first = pool.submit(other.get, f"/v1/jobs/{job_id}/result", params={"wait": 4})
            wait_for(lambda: hard.redis().zcard("mlqueue:quota:long-polls:") == 1)
            second = http.get(f"/v1/jobs/{job_id}/result", params={"wait": 4})
            assert second.status_code == 429
            assert second.headers["retry-after"] == "5"
            assert first.result().status_code == 202  # the first waited, and timed out
            pool.shutdown()
    assert http.get(f"/v1/jobs/{job_id}/result", params={"wait": 30}).status_code == 200
