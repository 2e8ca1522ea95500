"""The SDK's own parts: its models match the gateway's schemas, its retries are safe and honour
Retry-After, its errors carry where. HTTP is answered by httpx.MockTransport (the real gateway is
in tests/integration/test_sdk.py)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

import client.sdk
from client import (
    Client,
    CsvErrors,
    InvalidInput,
    Job,
    JobAccepted,
    JobPage,
    JobResult,
    ModelInfo,
    Models,
    RateLimited,
    Retry,
    Unavailable,
)

SCHEMAS: dict[type[BaseModel], str] = {
    Job: "JobView",
    JobAccepted: "JobAccepted",
    JobResult: "JobResult",
    Models: "ModelsView",
    ModelInfo: "ModelInfo",
    CsvErrors: "CsvErrors",
}
# Fields of the job API branch (retries) that the SDK reads once the gateway sends them.
ARRIVING = {"retry_of"}
ACCEPTED = {"job_id": "j1", "status": "queued", "model": "demo", "n_rows": 1, "location": "/x"}


def test_the_sdk_models_have_the_gateways_field_names(client: TestClient) -> None:
    components = client.get("/openapi.json").json()["components"]["schemas"]
    for model, name in SCHEMAS.items():
        server, sdk_fields = set(components[name]["properties"]), set(model.model_fields)
        assert server <= sdk_fields, name  # the SDK shows everything the gateway sends
        assert sdk_fields - server <= ARRIVING, name
    # The job listing arrives on another branch: its page must match once the gateway has it.
    if "JobPage" in components:
        assert set(JobPage.model_fields) == set(components["JobPage"]["properties"])


class Recorder:
    """Answers each request with the next of `answers`, and keeps the requests."""

    def __init__(self, *answers: httpx.Response) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        return self.answers.pop(0)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(client.sdk.time, "sleep", slept.append)
    return slept


def sdk(recorder: Recorder, **kwargs: Any) -> Client:
    return Client("http://gw", api_key="k", transport=httpx.MockTransport(recorder), **kwargs)


def problem(status: int, **extra: Any) -> httpx.Response:
    body = {"type": "about:blank", "title": "T", "status": status, "detail": "d", **extra}
    return httpx.Response(status, json=body)


def test_a_retried_submit_sends_the_same_idempotency_key_and_honours_retry_after(
    sleeps: list[float],
) -> None:
    recorder = Recorder(
        httpx.Response(
            429,
            json={"title": "TooManyRequests", "detail": "slow down"},
            headers={"Retry-After": "7"},
        ),
        httpx.Response(
            503, json={"title": "QueueUnavailable", "detail": "full"}, headers={"Retry-After": "2"}
        ),
        httpx.Response(202, json=ACCEPTED),
    )
    accepted = sdk(recorder).submit([[1.0, 2.0]], model="demo")
    assert accepted.job_id == "j1"
    keys = {r.headers["Idempotency-Key"] for r in recorder.requests}
    assert len(recorder.requests) == 3 and len(keys) == 1
    assert sleeps[0] >= 7 and sleeps[1] >= 2  # the server's advice is the floor
    assert recorder.requests[0].headers["Authorization"] == "Bearer k"
    # No priority unless given: today's gateway refuses unknown body fields.
    assert json.loads(recorder.requests[0].content) == {"data": [[1.0, 2.0]], "model": "demo"}


def test_priority_and_a_given_key_are_sent(sleeps: list[float]) -> None:
    recorder = Recorder(httpx.Response(202, json=ACCEPTED))
    sdk(recorder).submit([[1.0]], priority=5, idempotency_key="mine")
    (request,) = recorder.requests
    assert json.loads(request.content)["priority"] == 5
    assert request.headers["Idempotency-Key"] == "mine"


def test_retries_stop_and_the_last_error_is_raised(sleeps: list[float]) -> None:
    recorder = Recorder(*(problem(503) for _ in range(3)))
    with pytest.raises(Unavailable):
        sdk(recorder, retry=Retry(attempts=3, backoff=0.1)).models()
    assert len(recorder.requests) == 3 and len(sleeps) == 2
    assert sleeps[1] > sleeps[0] * 0.9  # backs off (jittered)
    limited = Recorder(
        httpx.Response(429, json={"detail": "x"}, headers={"Retry-After": "60"}),
    )
    with pytest.raises(RateLimited) as caught:
        sdk(limited, retry=Retry(attempts=1)).models()
    assert caught.value.retry_after == 60


def test_a_422_is_not_retried_and_says_where(sleeps: list[float]) -> None:
    errors = [
        {"loc": ["body", "data", 2, 5], "msg": "not a number"},
        {"line": 4, "column": 3, "name": "bmi", "msg": "non-numeric value 'abc'"},
    ]
    recorder = Recorder(problem(422, errors=errors))
    with pytest.raises(InvalidInput) as caught:
        sdk(recorder).submit([[1.0]])
    assert len(recorder.requests) == 1 and sleeps == []
    (row, line) = caught.value.errors
    assert (row.row, row.column, row.line) == (2, 5, None)
    assert (line.line, line.column, line.name, line.row) == (4, 3, "bmi", None)
    header = Recorder(problem(422, line=1))
    with pytest.raises(InvalidInput) as at_header:
        sdk(header).models()
    assert [w.line for w in at_header.value.errors] == [1]


VIEW = {"job_id": "j1", "kind": "csv", "model": "demo"}


def sse(*statuses: str) -> bytes:
    frames = [": ping\n\n"]
    for i, status in enumerate(statuses):
        view = {**VIEW, "status": status, "progress": {"rows_done": i, "percent": 50.0 * i}}
        frames.append(f"event: status\nid: e{i}\ndata: {json.dumps(view)}\n\n")
    return "".join(frames).encode()


def test_wait_follows_live_events_when_the_gateway_has_them(sleeps: list[float]) -> None:
    stream = httpx.Response(
        200,
        content=sse("queued", "running", "succeeded"),
        headers={"content-type": "text/event-stream"},
    )
    recorder = Recorder(stream)
    seen: list[tuple[str, int]] = []
    mlq = sdk(recorder)
    job = mlq.wait("j1", on_progress=lambda j: seen.append((j.status, j.progress.rows_done)))
    assert job.status == "succeeded"
    assert seen == [("queued", 0), ("running", 1), ("succeeded", 2)]
    assert [r.url.path for r in recorder.requests] == ["/v1/jobs/j1/events"]
    assert mlq.events is True


def test_without_an_events_route_wait_long_polls_and_remembers(sleeps: list[float]) -> None:
    running = {**VIEW, "status": "running"}
    recorder = Recorder(
        # No such route (title NotFound, not JobNotFound): the gateway predates live events.
        httpx.Response(404, json={"title": "NotFound", "detail": "Not Found"}),
        httpx.Response(202, json=running),
        httpx.Response(200, json={**VIEW, "status": "succeeded"}),  # the result: not read
        httpx.Response(200, json={**VIEW, "status": "succeeded"}),  # GET /v1/jobs/j1
    )
    mlq = sdk(recorder)
    seen: list[str] = []
    assert mlq.wait("j1", on_progress=lambda j: seen.append(j.status)).status == "succeeded"
    assert seen == ["running"] and mlq.events is False
    paths = [(r.url.path, r.url.params.get("wait")) for r in recorder.requests]
    assert paths == [
        ("/v1/jobs/j1/events", None),
        ("/v1/jobs/j1/result", "30"),
        ("/v1/jobs/j1/result", "30"),
        ("/v1/jobs/j1", None),
    ]
