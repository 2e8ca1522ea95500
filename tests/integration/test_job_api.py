"""Issue 14's job API on the real system: listing, idempotent submit, retry, rate limits, events."""

from __future__ import annotations

import http.server
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import httpx
import numpy as np
import pytest

from gateway import keys
from shared import jobstore, webhooks
from shared.settings import Settings
from tests.integration.conftest import System, consumer_paused, running_system, wait_for
from worker.sklearn_model import SklearnModel

pytestmark = pytest.mark.integration
KEY_FREE, KEY_LIMITED = keys.new_key(), keys.new_key()
WEBHOOK_SECRET = "integration-secret"
FREE, LIMITED = (keys.owner_id(keys.digest(k)) for k in (KEY_FREE, KEY_LIMITED))


@pytest.fixture(scope="module")
def keyed_system(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[System]:
    """A system with API keys and rate limits on: 2 jobs/s (5 at once) by default, none for
    the key overridden with an empty limit."""
    with running_system(
        tmp_path_factory.mktemp("keyed-system"),
        model_dir,
        db_offset=3,
        api_keys=json.dumps([keys.digest(KEY_FREE), keys.digest(KEY_LIMITED)]),
        rate_limit_jobs_per_second="2",
        rate_limit_jobs_burst="5",
        rate_limit_rows_per_second="1000",
        rate_limit_rows_burst="2000",
        rate_limit_overrides=json.dumps({FREE: {}}),
        webhook_secret=WEBHOOK_SECRET,
        webhook_allowed_hosts="127.0.0.1",
        webhook_backoff_seconds="1",
    ) as system:
        yield system


def test_listing_pages_through_250_jobs_newest_first(
    system: System, diabetes_rows: list[list[float]]
) -> None:
    with httpx.Client(base_url=system.base_url, timeout=30) as http:
        with consumer_paused(system), ThreadPoolExecutor(8) as pool:
            submitted = list(
                pool.map(lambda i: _submit(http, diabetes_rows[i % 400 : i % 400 + 1]), range(250))
            )
        listed = _listed(http, {"limit": 37})
        # Nothing else submits meanwhile: the newest 250 are exactly these.
        assert {j["job_id"] for j in listed[:250]} == set(submitted)
        times = [j["created_at"] for j in listed]
        assert times == sorted(times, reverse=True)
        assert len({j["job_id"] for j in listed}) == len(listed)  # no page repeats an entry
        json_only = _listed(http, {"limit": 100, "kind": "json"})
        assert {j["job_id"] for j in json_only} >= set(submitted)
        assert _listed(http, {"limit": 100, "kind": "csv"}) == [
            j for j in listed if j["kind"] == "csv"
        ]


def _submit(http: httpx.Client, rows: list[list[float]], **extra: object) -> str:
    response = http.post("/v1/jobs", json={"data": rows, **extra})
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


def _listed(http: httpx.Client, params: dict[str, object]) -> list[dict[str, object]]:
    jobs: list[dict[str, object]] = []
    cursor = None
    for _ in range(1000):
        response = http.get("/v1/jobs", params={**params, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(body["jobs"]) <= int(str(params["limit"]))
        jobs += body["jobs"]
        cursor = body["next_cursor"]
        if cursor is None:
            return jobs
    raise AssertionError("the cursor never ran out")


def test_a_retry_after_a_dropped_connection_creates_one_job(
    system: System, diabetes_rows: list[list[float]]
) -> None:
    body = json.dumps({"data": diabetes_rows[:3]}).encode()
    with httpx.Client(base_url=system.base_url, timeout=30) as http:
        before = {j["job_id"] for j in _listed(http, {"limit": 100})}
        # The first attempt: the request is sent and handled, but the client hangs up before
        # reading the answer (as when a connection drops on the way back).
        host, port = system.base_url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Idempotency-Key: drop-1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            wait_for(lambda: len(_listed(http, {"limit": 100})) > len(before))
        retry = http.post("/v1/jobs", content=body, headers=_json("drop-1"))
        assert retry.status_code == 202, retry.text
        new = [j for j in _listed(http, {"limit": 100}) if j["job_id"] not in before]
        assert [j["job_id"] for j in new] == [retry.json()["job_id"]]
        assert retry.headers["location"] == f"/v1/jobs/{retry.json()['job_id']}"
        # The first attempt made the job, so the retry was a replay of it.
        assert retry.headers.get("idempotent-replayed") == "true"
        result = http.get(f"{retry.headers['location']}/result", params={"wait": 20})
        assert len(result.json()["data"]) == 3
        again = http.post("/v1/jobs", json={"data": diabetes_rows[3:4]}, headers=_json("drop-1"))
        assert again.status_code == 422 and "different request body" in again.json()["detail"]


def test_concurrent_submits_with_one_key_create_one_job(
    system: System, diabetes_rows: list[list[float]]
) -> None:
    body = json.dumps({"data": diabetes_rows[:2]}).encode()
    with httpx.Client(base_url=system.base_url, timeout=30) as http:
        before = {j["job_id"] for j in _listed(http, {"limit": 100})}
        with ThreadPoolExecutor(12) as pool:
            answers = list(
                pool.map(
                    lambda _: http.post("/v1/jobs", content=body, headers=_json("burst-1")),
                    range(12),
                )
            )
        assert [a.status_code for a in answers] == [202] * 12
        assert len({a.json()["job_id"] for a in answers}) == 1
        assert sum(a.headers.get("idempotent-replayed") == "true" for a in answers) == 11
        new = [j for j in _listed(http, {"limit": 100}) if j["job_id"] not in before]
        assert [j["job_id"] for j in new] == [answers[0].json()["job_id"]]


def _json(idempotency_key: str) -> dict[str, str]:
    return {"Content-Type": "application/json", "Idempotency-Key": idempotency_key}


def test_retry_of_a_cancelled_and_a_failed_job(
    system: System, http: httpx.Client, model_dir: Path, diabetes_rows: list[list[float]]
) -> None:
    estimator = SklearnModel.load(model_dir / "demo" / "1" / "model.skops")
    rows = diabetes_rows[10:15]
    redis = system.redis()
    with consumer_paused(system):
        cancelled = _submit(http, rows)
        assert http.delete(f"/v1/jobs/{cancelled}").status_code == 200
        failed = _submit(http, rows)
        # What a worker records for a job that failed after it started.
        for call, script in (
            (
                jobstore.start_call(failed, model="demo:1", n_rows=5, ttl=600, max_attempts=3),
                jobstore.START,
            ),
            (
                jobstore.failure_call(failed, error_type="ModelError", message="x", ttl=600),
                jobstore.FINISH,
            ),
        ):
            redis.eval(script, len(call.keys), *call.keys, *call.args)
    for old in (cancelled, failed):
        response = http.post(f"/v1/jobs/{old}/retry")
        assert response.status_code == 202, response.text
        new = response.json()["job_id"]
        result = http.get(f"/v1/jobs/{new}/result", params={"wait": 20})
        assert result.status_code == 200
        assert result.json()["data"] == [float(v) for v in estimator.predict(np.asarray(rows))]
        assert http.get(f"/v1/jobs/{new}").json()["retry_of"] == old
        again = http.post(f"/v1/jobs/{new}/retry")
        assert again.status_code == 409 and "is succeeded" in again.json()["detail"]


def test_a_burst_over_the_rate_limit_gets_429s_with_the_draft_headers(
    keyed_system: System, diabetes_rows: list[list[float]]
) -> None:
    limited = {"Authorization": f"Bearer {KEY_LIMITED}"}
    body = {"data": diabetes_rows[:2]}
    with httpx.Client(base_url=keyed_system.base_url, timeout=30) as http:
        started = time.monotonic()
        with ThreadPoolExecutor(10) as pool:
            answers = list(
                pool.map(lambda _: http.post("/v1/jobs", json=body, headers=limited), range(30))
            )
        elapsed = time.monotonic() - started
        codes = [a.status_code for a in answers]
        assert set(codes) == {202, 429}
        # 5 at once, then 2 per second while the burst lasted (and nothing more).
        assert 5 <= codes.count(202) <= 5 + 2 * elapsed + 1, (codes, elapsed)
        for refused in (a for a in answers if a.status_code == 429):
            assert refused.headers["content-type"] == "application/problem+json"
            assert 1 <= int(refused.headers["retry-after"]) <= 3
            assert refused.headers["ratelimit-policy"] == '"jobs";q=5;w=3, "rows";q=2000;w=2'
            state = re.fullmatch(
                r'"jobs";r=(\d+);t=(\d+), "rows";r=(\d+);t=(\d+)', refused.headers["ratelimit"]
            )
            assert state is not None and int(state[1]) == 0, refused.headers["ratelimit"]
        time.sleep(int(answers[codes.index(429)].headers["retry-after"]))
        assert http.post("/v1/jobs", json=body, headers=limited).status_code == 202
        # The other key has its own (unlimited) budget: the burst did not touch it.
        free = {"Authorization": f"Bearer {KEY_FREE}"}
        assert all(
            http.post("/v1/jobs", json=body, headers=free).status_code == 202 for _ in range(12)
        )


def test_an_sse_client_reads_progress_to_the_end_and_resumes(
    csv_system: System, diabetes_rows: list[list[float]]
) -> None:
    # 15 chunks of 100 lines (under the 16 an upload may leave unscored while the consumer is
    # paused): progress moves in many steps while the stream is open.
    header = "age,sex,bmi,bp,s1,s2,s3,s4,s5,s6\n"
    lines = [",".join(map(repr, diabetes_rows[i % 400])) for i in range(1500)]
    data = (header + "\n".join(lines) + "\n").encode()
    with httpx.Client(base_url=csv_system.base_url, timeout=30) as http:
        with consumer_paused(csv_system):
            upload = http.post("/v1/jobs/csv", files={"file": ("d.csv", data, "text/csv")})
            assert upload.status_code == 202, upload.text
            job_id = upload.json()["job_id"]
            # The first connection reads the queued state, then drops.
            first = _sse(http, job_id, stop_after=1)
        assert json.loads(first[0]["data"])["status"] == "queued"
        rest = _sse(http, job_id, last_event_id=first[-1]["id"])
        views = [json.loads(e["data"]) for e in rest]
        assert views and views[0] != json.loads(first[0]["data"])  # resumed, not repeated
        done = [v["progress"]["rows_done"] for v in views]
        assert done == sorted(done) and views[-1]["status"] == "succeeded"
        assert views[-1]["progress"] == {**views[-1]["progress"], "rows_done": 1500}
        assert views[-1] == http.get(f"/v1/jobs/{job_id}").json()
        assert len({e["id"] for e in first + rest}) == len(first + rest)
        assert _sse(http, job_id, last_event_id=rest[-1]["id"]) == []  # nothing new: it ends


def _sse(
    http: httpx.Client, job_id: str, last_event_id: str | None = None, stop_after: int = 0
) -> list[dict[str, str]]:
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    events: list[dict[str, str]] = []
    current: dict[str, str] = {}
    with http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith(":"):
                continue
            if line:
                name, _, value = line.partition(": ")
                current[name] = value
                continue
            if current.get("event") == "status":
                events.append(current)
                if len(events) == stop_after:
                    break
            current = {}
    return events


def test_a_high_priority_job_overtakes_a_low_priority_csv_backlog(
    keyed_system: System, model_dir: Path, diabetes_rows: list[list[float]]
) -> None:
    estimator = SklearnModel.load(model_dir / "demo" / "1" / "model.skops")
    # 15 chunks of the default chunk size (under the 16 an upload may leave unscored), enough
    # to keep both worker processes busy for a while.
    lines = [",".join(f"{v:.4f}" for v in row) for row in diabetes_rows[:400]]
    rows = 15 * Settings.model_fields["csv_chunk_rows"].default
    body = "\n".join(lines[i % len(lines)] for i in range(rows))
    data = ("age,sex,bmi,bp,s1,s2,s3,s4,s5,s6\n" + body + "\n").encode()
    free = {"Authorization": f"Bearer {KEY_FREE}"}
    one = diabetes_rows[7:8]
    with httpx.Client(base_url=keyed_system.base_url, timeout=60, headers=free) as http:
        with consumer_paused(keyed_system):
            upload = http.post(
                "/v1/jobs/csv",
                params={"priority": "low"},
                files={"file": ("big.csv", data, "text/csv")},
            )
            assert upload.status_code == 202, upload.text
        backlog = upload.json()["job_id"]
        wait_for(lambda: http.get(f"/v1/jobs/{backlog}").json()["status"] == "running")
        at_submit = http.get(f"/v1/jobs/{backlog}").json()["progress"]["chunks_done"]
        started = time.perf_counter()
        low = _submit(http, one, priority="low")  # queued before the high one, behind the CSV
        high = _submit(http, one, priority="high")
        result = http.get(f"/v1/jobs/{high}/result", params={"wait": 30})
        latency = time.perf_counter() - started
        at_high = http.get(f"/v1/jobs/{backlog}").json()["progress"]["chunks_done"]
        assert result.status_code == 200
        assert result.json()["data"] == [float(v) for v in estimator.predict(np.asarray(one))]
        assert http.get(f"/v1/jobs/{low}/result", params={"wait": 30}).status_code == 200
        low_latency = time.perf_counter() - started
        print(
            f"priority: high one-row job done in {latency * 1000:.0f} ms, the low one queued "
            f"just before it in {low_latency * 1000:.0f} ms; low CSV chunks scored: "
            f"{at_submit} of 15 at submit, {at_high} when the high job was done"
        )
        assert http.get(f"/v1/jobs/{backlog}/result", params={"wait": 30}).status_code == 200
        views = {j: http.get(f"/v1/jobs/{j}").json() for j in (high, low, backlog)}
        assert views[high]["priority"] == "high" and views[backlog]["priority"] == "low"
        assert at_high < 15  # the backlog was still there when the high job was done
        # High went ahead of all the low work queued before it; low waited behind the CSV.
        assert views[high]["finished_at"] < views[low]["started_at"]
        assert views[high]["finished_at"] < views[backlog]["finished_at"]


class _JoiningServer(http.server.ThreadingHTTPServer):
    # Closing the server waits for its handler threads, so no held request's socket outlives
    # the test (a delivery retried after a timeout may still be in a handler at the end).
    daemon_threads = False


class _Receiver(http.server.BaseHTTPRequestHandler):
    """Fails the first two deliveries (500), accepts the rest; records each with its time."""

    seen: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen.append({"at": time.time(), "headers": dict(self.headers), "body": body})
        self.send_response(500 if len(type(self).seen) <= 2 else 204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


def test_a_webhook_is_retried_with_backoff_and_delivered_signed(
    keyed_system: System, diabetes_rows: list[list[float]], model_dir: Path
) -> None:
    estimator = SklearnModel.load(model_dir / "demo" / "1" / "model.skops")
    _Receiver.seen = []
    receiver = _JoiningServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    rows = diabetes_rows[20:23]
    free = {"Authorization": f"Bearer {KEY_FREE}"}
    try:
        with httpx.Client(base_url=keyed_system.base_url, timeout=30, headers=free) as http_:
            # Without the allowance, loopback and private targets are refused at submit.
            for target in ("http://localhost:9/h", "http://10.0.0.7/h", "http://[::1]:9/h"):
                refused = http_.post("/v1/jobs", json={"data": rows, "callback_url": target})
                assert refused.status_code == 422, refused.text
                assert "callback_url" in refused.json()["detail"]
            submitted = time.time()
            job_id = _submit(http_, rows, callback_url=url)
            wait_for(lambda: len(_Receiver.seen) >= 3, timeout=60)
            wait_for(
                lambda: http_.get(f"/v1/jobs/{job_id}").json()["webhook"]["state"] == "delivered"
            )
            view = http_.get(f"/v1/jobs/{job_id}").json()
    finally:
        receiver.shutdown()
        receiver.server_close()
    assert view["webhook"] == {"state": "delivered", "attempts": 3, "last_status": 204}
    assert len(_Receiver.seen) == 3
    assert len({r["headers"][webhooks.DELIVERY_HEADER] for r in _Receiver.seen}) == 1
    for request in _Receiver.seen:
        header = request["headers"][webhooks.SIGNATURE_HEADER]
        assert webhooks.verify(WEBHOOK_SECRET, header, request["body"], now=int(time.time()))
    payload = json.loads(_Receiver.seen[-1]["body"])
    assert payload["job_id"] == job_id and payload["status"] == "succeeded"
    assert payload["data"] == [float(v) for v in estimator.predict(np.asarray(rows))]
    times = [round(r["at"] - submitted, 2) for r in _Receiver.seen]
    print(f"webhook: attempts at {times} s after submit (backoff base 1 s)")
    # Backed off 1 s, then 2 s, each +/- 20 % jitter (lower bounds: slowness cannot break them).
    assert times[1] - times[0] >= 0.8 and times[2] - times[1] >= 1.6


class _Stalling(http.server.BaseHTTPRequestHandler):
    """Holds every delivery until `release` is set, then accepts it."""

    release = threading.Event()
    held: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).held.append(json.loads(body)["job_id"])
        type(self).release.wait(60)
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


def test_slow_webhook_receivers_never_hold_up_predictions(
    keyed_system: System, diabetes_rows: list[list[float]], model_dir: Path
) -> None:
    # More stalled deliveries than the worker has processes (2): were a delivery made in the
    # task itself, every process would wait on the receiver and the next job with them.
    estimator = SklearnModel.load(model_dir / "demo" / "1" / "model.skops")
    _Stalling.release.clear()
    _Stalling.held = []
    receiver = _JoiningServer(("127.0.0.1", 0), _Stalling)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    free = {"Authorization": f"Bearer {KEY_FREE}"}
    try:
        with httpx.Client(base_url=keyed_system.base_url, timeout=30, headers=free) as http_:
            hooked = [_submit(http_, diabetes_rows[i : i + 1], callback_url=url) for i in range(4)]
            wait_for(lambda: len(_Stalling.held) >= 4, timeout=30)
            rows = diabetes_rows[40:42]
            job_id = _submit(http_, rows)
            result = http_.get(f"/v1/jobs/{job_id}/result", params={"wait": 30})
            # The job was served while every delivery was still held by the receiver.
            states = [http_.get(f"/v1/jobs/{j}").json()["webhook"]["state"] for j in hooked]
            assert not _Stalling.release.is_set() and states == ["pending"] * 4
            assert result.status_code == 200
            assert result.json()["data"] == [float(v) for v in estimator.predict(np.asarray(rows))]
            _Stalling.release.set()
            for j in hooked:
                wait_for(
                    lambda j=j: http_.get(f"/v1/jobs/{j}").json()["webhook"]["state"] == "delivered"
                )
    finally:
        _Stalling.release.set()
        receiver.shutdown()
        receiver.server_close()
