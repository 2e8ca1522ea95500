"""A password-protected Redis: jobs run through it, and the password shows up nowhere."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.stack import Stack
from tests.integration.models import Sleepy, add_model, row_sums

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("password")
    add_model(root / "models", "demo", Sleepy(0.0))
    password = "pw-" + secrets.token_hex(12)
    stack = Stack(root / "run", root / "models", password=password)
    try:
        yield stack.start(concurrency=1)
    finally:
        stack.stop()


def test_jobs_run_on_a_password_protected_redis(stack: Stack) -> None:
    rows = [[float(i + j) for j in range(10)] for i in range(3)]
    with httpx.Client(base_url=stack.base_url, timeout=30) as http:
        job = http.post("/v1/jobs", json={"data": rows}).json()
        result = http.get(f"/v1/jobs/{job['job_id']}/result", params={"wait": 20})
        assert result.status_code == 200 and result.json()["data"] == row_sums(rows)
        assert http.get("/readyz").status_code == 200


def test_a_wrong_password_is_refused_by_redis(stack: Stack) -> None:
    import redis

    wrong = stack.redis_url.replace(stack.password or "", "wrong")
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(wrong).ping()


def test_the_password_never_reaches_logs_or_error_bodies(stack: Stack, tmp_path: Path) -> None:
    assert stack.password
    with httpx.Client(base_url=stack.base_url, timeout=30) as http:
        stack.stop_redis()  # errors now carry connection details: they must not carry the URL
        bodies = [
            http.post("/v1/jobs", json={"data": [[0.0] * 10]}),
            http.get("/v1/jobs/6f1c1ad5-0b8e-4a59-8a47-3c5ad6d1e000"),
            http.get("/readyz"),
        ]
    assert [r.status_code for r in bodies] == [503, 503, 503]
    assert bodies[0].headers["retry-after"]
    text = "\n".join(r.text for r in bodies) + stack.logs()
    assert "Connection refused" in text or "unreachable" in text  # the errors did happen
    assert stack.password not in text
