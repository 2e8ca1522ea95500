"""The fast lane answers as the FastAPI routes do, and hands on every request it cannot read as
they would (`gateway.fastlane`).

Two gateways, each on its own fakeredis, one with the lane and one without, are sent the same
requests; their answers must be equal (job ids aside). Separately, the lane alone over a recorder
shows which requests it answers itself and that the ones it hands on arrive whole.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

import fakeredis
import orjson
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.types import Receive, Scope, Send

from gateway import keys
from gateway.app import create_app
from gateway.fastlane import FastLane
from gateway.state import GatewayState
from shared.registry import Registry
from shared.settings import Settings
from shared.tasks import QUEUE
from tests.unit.conftest import CountingLoader, FakePublisher, MockModel
from worker.jobs import JobRecorder
from worker.model_cache import ModelCache
from worker.runtime import Runtime

ROW = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 0.5]
JSON = {"content-type": "application/json"}
UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
KEY = "mlq_fast-lane-test-key"
# Headers whose values differ between two equal answers (or that the test client adds).
UNCOMPARED = {"date", "server", "content-length"}


def gateway(
    settings: Settings, fast_lane: bool, server: fakeredis.FakeServer | None = None
) -> FastAPI:
    """A gateway on its own fakeredis whose jobs run at once on `MockModel` (row sums)."""
    server = server or fakeredis.FakeServer()
    runtime = Runtime(
        settings,
        JobRecorder(fakeredis.FakeRedis(server=server), settings.result_ttl, settings.max_attempts),
        ModelCache(Registry(settings.model_dir, settings.default_model), CountingLoader(
            MockModel.from_bytes
        )),
    )  # fmt: skip
    state = GatewayState.create(
        settings, redis=fakeredis.FakeAsyncRedis(server=server), publisher=FakePublisher(runtime)
    )
    app = create_app(settings, fast_lane=fast_lane)
    app.state.gateway = state
    return app


@pytest.fixture(params=[False, True], ids=["open", "keyed"])
def keyed(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    if not request.param:
        return settings
    return settings.model_copy(update={"api_keys": [keys.digest(KEY)]})


@pytest.fixture
def pair(keyed: Settings) -> tuple[TestClient, TestClient]:
    """(with the lane, without it)."""
    return tuple(  # type: ignore[return-value]
        TestClient(gateway(keyed, lane), raise_server_exceptions=False) for lane in (True, False)
    )


def answer(client: TestClient, method: str, path: str, **kwargs: Any) -> tuple[Any, ...]:
    """What a client sees of an answer, job ids written as `<id>`."""
    response = client.request(method, path, **kwargs)
    headers = sorted(
        (k, UUID.sub(b"<id>", v.encode()).decode())
        for k, v in response.headers.items()
        if k not in UNCOMPARED
    )
    return response.status_code, headers, UUID.sub(b"<id>", response.content)


def same(pair: tuple[TestClient, TestClient], method: str, path: str, **kw: Any) -> tuple[Any, ...]:
    fast, framework = (answer(client, method, path, **kw) for client in pair)
    assert fast == framework
    return fast


AUTH = {"authorization": f"Bearer {KEY}"}
SUBMITS: list[tuple[bytes, dict[str, str]]] = [
    (b'{"data": [[1,2,3,4,5,6,7,8,9,0.5]]}', {}),
    (b'{"data": [[1,2,3,4,5,6,7,8,9,0.5]], "priority": "high", "model": "demo"}', {}),
    (b'{"data": [[1,2,3,4,5,6,7,8,9,0.5]]}', {"content-type": "application/json; charset=utf-8"}),
    (b'{"data": [[1,2,3,4,5,6,7,8,9,0.5]]}', {"content-type": "application/vnd.x+json"}),
    (b'{"data": [[1,2,3,4,5,6,7,8,9,0.5]]}', {"content-type": "text/plain"}),
    (b'{"data": [[1,2,3,4,5,6,7,8,9,0.5]]}', {"content-type": ""}),
    (b'{"data": [[1,2,3,4,5,6,7,8,9,0.5]]}', {"idempotency-key": "k-1"}),
    (b'{"data": [[1,2,3,4,5,6,7,8,9,0.5]]}', {"idempotency-key": "has space"}),
    (b'{"data": [[1,2,3]]}', {}),  # the service's 422 (row width)
    (b'{"data": [[1,2,3,4,5,6,7,8,9,0.5]], "model": "nope"}', {}),  # ModelNotFound
    (b'{"data": [[1,2,3,4,5,6,7,8,9,true]]}', {}),
    (b'{"data": [[1,2,3,4,5,6,7,8,9,NaN]]}', {}),  # json takes NaN, the schema refuses it
    (b'{"data": [[1,2,3,4,5,6,7,8,9,1e400]]}', {}),
    (b'{"data": [[1,2,3,4,5,6,7,8,9,123456789012345678901234567890]]}', {}),
    (b'{"data": []}', {}),
    (b'{"data": [[1,2,3,4,5,6,7,8,9,0.5]], "extra": 1}', {}),
    (b'{"data": [[1,2,3,4,5,6,7,8,9,0.5]]', {}),
    (b"\xef\xbb\xbf" + b'{"data": [[1,2,3,4,5,6,7,8,9,0.5]]}', {}),  # a BOM: json.loads takes it
    (b'{"data": "\xff"}', {}),
    (b"[" * 100_000 + b"]" * 100_000, {}),
    (b"", {}),
    (b'{"data": [[1,2,3,4,5,6,7,8,9,0.5]]}', {"authorization": "Basic abc"}),
    (b'{"data": [[1,2,3,4,5,6,7,8,9,0.5]]}', {"authorization": "bearer  " + KEY}),
    (b'{"data": [[1,2,3,4,5,6,7,8,9,0.5]]}', {"authorization": "Bearer wrong"}),
]


@pytest.mark.parametrize(("body", "headers"), SUBMITS)
def test_a_submit_is_answered_alike(
    pair: tuple[TestClient, TestClient], body: bytes, headers: dict[str, str]
) -> None:
    sent = {**JSON, **AUTH, **headers}
    same(pair, "POST", "/v1/jobs", content=body, headers=sent)
    if "idempotency-key" in headers:  # the replay too
        same(pair, "POST", "/v1/jobs", content=body, headers=sent)


def test_a_job_and_its_result_are_answered_alike(pair: tuple[TestClient, TestClient]) -> None:
    status, _, body = same(pair, "POST", "/v1/jobs", json={"data": [ROW, ROW]}, headers=AUTH)
    assert status == 202
    assert b'"job_id":"<id>"' in body
    for query in ("", "?wait=0", "?wait=1.5", "?wait=30", "?wait=31", "?wait=-1", "?wait=x",
                  "?wait=1&wait=2", "?other=1", "?wait=%31"):  # fmt: skip
        answers = []
        for client in pair:
            job_id = client.post("/v1/jobs", json={"data": [ROW, ROW]}, headers=AUTH).json()
            path = f"/v1/jobs/{job_id['job_id']}/result{query}"
            answers.append(answer(client, "GET", path, headers=AUTH))
        assert answers[0] == answers[1], query
    # Values, not just equal answers: each prediction is its row's sum (MockModel).
    fast = pair[0]
    job_id = fast.post("/v1/jobs", json={"data": [ROW, ROW]}, headers=AUTH).json()["job_id"]
    result = fast.get(f"/v1/jobs/{job_id}/result", headers=AUTH)
    assert result.json()["data"] == [sum(ROW), sum(ROW)]


@pytest.mark.parametrize("job_id", ["missing", "x" * 200, "x" * 201, "a b", "%2F"])
def test_an_unknown_or_odd_job_id_is_answered_alike(
    pair: tuple[TestClient, TestClient], job_id: str
) -> None:
    status, _, _ = same(pair, "GET", f"/v1/jobs/{job_id}/result", headers=AUTH)
    assert status in (404, 422)


def test_someone_elses_result_is_not_found_in_both(keyed: Settings) -> None:
    other = "mlq_someone-else"
    settings = keyed.model_copy(update={"api_keys": [keys.digest(KEY), keys.digest(other)]})
    for lane in (True, False):
        client = TestClient(gateway(settings, lane))
        job_id = client.post("/v1/jobs", json={"data": [ROW]}, headers=AUTH).json()["job_id"]
        theirs = client.get(
            f"/v1/jobs/{job_id}/result", headers={"authorization": f"Bearer {other}"}
        )
        assert theirs.status_code == 404, lane


@pytest.mark.parametrize(
    "body",
    [b'{"data": [[1,2,3,4,5,6,7,8,9,0.5], [0,0,0,0,0,0,0,0,0,1]]}', b'{"data": [[1,2]]}', b"{"],
)
def test_predict_is_answered_alike(pair: tuple[TestClient, TestClient], body: bytes) -> None:
    status, _, content = same(pair, "POST", "/predict", content=body, headers={**JSON, **AUTH})
    if status == 200:
        assert content == b'{"data":[45.5,1.0]}'


FLAT = b'{"name":"input-0","shape":[1,10],"datatype":"FP64","data":[1,2,3,4,5,6,7,8,9,0.5]}'
BINARY = struct.pack("<10f", *ROW)
BINARY_HEADER = (
    b'{"inputs":[{"name":"input-0","shape":[1,10],"datatype":"FP32",'
    b'"parameters":{"binary_data_size":40}}]}'
)
INFERS: list[tuple[str, bytes, dict[str, str]]] = [
    ("/v2/models/demo/infer", b'{"id":"r-1","inputs":[' + FLAT + b"]}", JSON),
    ("/v2/models/demo/versions/1/infer", b'{"inputs":[' + FLAT + b"]}", JSON),
    ("/v2/models/demo/versions/9/infer", b'{"inputs":[' + FLAT + b"]}", JSON),
    ("/v2/models/nope/infer", b'{"inputs":[' + FLAT + b"]}", JSON),
    ("/v2/models/demo/infer", b'{"inputs":[]}', JSON),
    ("/v2/models/demo/infer", b"{not json", JSON),
    ("/v2/models/demo/infer", b'{"inputs":[' + FLAT + b"]}", {}),
    ("/v2/models/demo/infer", BINARY_HEADER + BINARY,
     {"inference-header-content-length": str(len(BINARY_HEADER))}),
    ("/v2/models/demo/infer", BINARY_HEADER + BINARY, {"inference-header-content-length": "x"}),
]  # fmt: skip


@pytest.mark.parametrize(("path", "body", "headers"), INFERS)
def test_a_v2_infer_is_answered_alike(
    pair: tuple[TestClient, TestClient], path: str, body: bytes, headers: dict[str, str]
) -> None:
    status, _, content = same(pair, "POST", path, content=body, headers={**AUTH, **headers})
    if status == 200:
        assert orjson.loads(content)["outputs"][0]["data"] == [sum(ROW)]


def test_a_full_queue_is_a_503_in_both(keyed: Settings) -> None:
    full = keyed.model_copy(update={"max_queue_depth": 1})
    servers = [fakeredis.FakeServer() for _ in range(2)]
    for server in servers:
        fakeredis.FakeRedis(server=server).lpush(QUEUE, *[b"waiting"] * 5)
    pair = (
        TestClient(gateway(full, True, servers[0])),
        TestClient(gateway(full, False, servers[1])),
    )
    for path in ("/v1/jobs", "/predict", "/v2/models/demo/infer"):
        status, headers, _ = same(pair, "POST", path, json={"data": [ROW]}, headers=AUTH)
        assert status == 503
        assert ("retry-after", "42") in headers  # 2 + 10 x (5 - 1) / 1


# Near-valid bodies: well-formed jobs with a few bad parts, so both answers are exercised.
cell = st.floats(allow_nan=True) | st.integers() | st.booleans() | st.text(max_size=2)
rows = st.lists(st.lists(cell, min_size=9, max_size=11), min_size=0, max_size=3)
fields = st.fixed_dictionaries(
    {"data": rows},
    optional={
        "model": st.sampled_from(["demo", "default", "nope", "../x", ""]),
        "priority": st.sampled_from(["high", "normal", "low", "urgent"]),
        "callback_url": st.sampled_from(["https://example.com/hook", "ftp://x", None]),
        "extra": st.integers(),
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])  # fmt: skip
@given(body=fields, content_type=st.sampled_from(["application/json", "text/json", None]))
def test_any_submit_is_answered_alike(
    pair: tuple[TestClient, TestClient], body: dict[str, Any], content_type: str | None
) -> None:
    headers = {**AUTH, **({"content-type": content_type} if content_type else {})}
    same(pair, "POST", "/v1/jobs", content=json.dumps(body).encode(), headers=headers)


class Recorder:
    """The app behind the lane: records each request handed on, with its body, and answers 418."""

    def __init__(self) -> None:
        self.handed: list[tuple[str, bytes]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        query = scope["query_string"].decode()
        self.handed.append((scope["path"] + (f"?{query}" if query else ""), body))
        await send({"type": "http.response.start", "status": 418, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture
def behind(app: FastAPI) -> tuple[TestClient, Recorder]:
    """The lane alone in front of a recorder; the gateway app only lends it its state."""
    recorder = Recorder()
    lane = FastLane(recorder)

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = app
        await lane(scope, receive, send)

    return TestClient(asgi), recorder  # type: ignore[arg-type]


def test_the_lane_answers_the_common_requests_itself(behind: tuple[TestClient, Recorder]) -> None:
    client, recorder = behind
    submitted = client.post("/v1/jobs", json={"data": [ROW]})
    assert submitted.status_code == 202
    job_id = submitted.json()["job_id"]
    result = client.get(f"/v1/jobs/{job_id}/result?wait=2")
    assert result.json()["data"] == [sum(ROW)]
    assert client.post("/predict", json={"data": [ROW]}).json() == {"data": [sum(ROW)]}
    inferred = client.post("/v2/models/demo/infer", content=b'{"inputs":[' + FLAT + b"]}")
    assert inferred.json()["outputs"][0]["data"] == [sum(ROW)]
    assert client.get("/v1/jobs/missing/result").status_code == 404  # answered, by the handler
    assert recorder.handed == []


@pytest.mark.parametrize(
    ("method", "path", "body", "headers"),
    [
        ("POST", "/v1/jobs", b'{"data": [[1]], ', JSON),
        ("POST", "/v1/jobs", b'{"data": [[1,2,3,4,5,6,7,8,9,0.5]]}', {}),
        ("POST", "/v1/jobs", b'{"data": [[1,2,3,4,5,6,7,8,9,0.5]]}', {**JSON, "x": "1"} | {
            "content-type": "application/problem+json"}),
        ("POST", "/predict", b'{"data": "x"}', JSON),
        ("GET", "/v1/jobs/j/result?wait=99", b"", {}),
        ("GET", "/v1/jobs/j", b"", {}),
        ("POST", "/v1/jobs/", b"{}", JSON),
        ("PUT", "/v1/jobs", b"{}", JSON),
    ],
)  # fmt: skip
def test_what_the_lane_cannot_read_reaches_the_app_whole(
    behind: tuple[TestClient, Recorder],
    method: str,
    path: str,
    body: bytes,
    headers: dict[str, str],
) -> None:
    client, recorder = behind
    assert client.request(method, path, content=body, headers=headers).status_code == 418
    assert recorder.handed == [(path, body)]


def test_a_header_sent_twice_is_handed_on(behind: tuple[TestClient, Recorder]) -> None:
    client, recorder = behind
    headers = [("content-type", "application/json"), ("idempotency-key", "a"),
               ("idempotency-key", "b")]  # fmt: skip
    body = b'{"data": [[1,2,3,4,5,6,7,8,9,0.5]]}'
    assert client.post("/v1/jobs", content=body, headers=headers).status_code == 418
    assert recorder.handed == [("/v1/jobs", body)]


def test_metrics_name_the_route_the_lane_answered(client: TestClient) -> None:
    client.post("/v1/jobs", json={"data": [ROW]})
    scrape = client.get("/metrics").text
    assert re.search(
        r'mlqueue_http_requests_total\{method="POST",route="/v1/jobs",status="202"\} [1-9]', scrape
    )


def test_the_lane_is_in_the_app_by_default(model_dir: Path) -> None:
    stack = create_app(Settings(model_dir=model_dir)).user_middleware
    assert FastLane in [m.cls for m in stack]
    assert FastLane not in [m.cls for m in create_app(Settings(), fast_lane=False).user_middleware]
