"""Completion webhooks: signature, SSRF guard, submit checks, one delivery and its retries."""

from __future__ import annotations

import hmac
import http.server
import threading
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import fakeredis
import orjson
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from shared import jobstore, webhooks
from shared.errors import InvalidInput
from shared.settings import Settings
from tests.unit.conftest import FakePublisher
from worker.webhooks import WebhookSweep, deliver

ROW = [0.01 * i for i in range(10)]
SECRET = "s3cret"


class Receiver(http.server.BaseHTTPRequestHandler):
    """Answers the statuses in `plan` in turn (then 200), recording every request."""

    plan: ClassVar[list[int]] = []
    seen: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen.append({"headers": dict(self.headers), "body": body})
        status = type(self).plan.pop(0) if type(self).plan else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    Receiver.plan, Receiver.seen = [], []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "webhook_secret": SecretStr(SECRET),
            "webhook_allowed_hosts": ["127.0.0.1"],
            "webhook_max_attempts": 3,
            "webhook_backoff_seconds": 10.0,
        }
    )


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    header = webhooks.signature(SECRET, 1700000000, b'{"a":1}')
    assert header == (
        "t=1700000000,v1=" + hmac.new(SECRET.encode(), b'1700000000.{"a":1}', "sha256").hexdigest()
    )
    assert webhooks.verify(SECRET, header, b'{"a":1}', now=1700000100)
    assert not webhooks.verify(SECRET, header, b'{"a":2}', now=1700000100)
    assert not webhooks.verify("other", header, b'{"a":1}', now=1700000100)
    assert not webhooks.verify(SECRET, header, b'{"a":1}', now=1700000000 + 301)  # too old


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://localhost:8000/x",
        "http://10.1.2.3/x",
        "http://192.168.0.1/x",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/x",
        "http://[fd00:ec2::254]/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://0.0.0.0/x",
        "ftp://example.com/x",
        "file:///etc/passwd",
        "http:///nohost",
    ],
)
def test_internal_or_odd_targets_are_refused(url: str) -> None:
    with pytest.raises(InvalidInput, match="callback_url"):
        webhooks.check_url(url, [])


def test_an_allowed_host_passes_the_guard() -> None:
    webhooks.check_url("http://127.0.0.1:9/x", ["127.0.0.1"])


def test_submit_refuses_a_private_callback_with_a_422(client: TestClient) -> None:
    response = client.post("/v1/jobs", json={"data": [ROW], "callback_url": "http://10.0.0.1/h"})
    assert response.status_code == 422
    assert "private" in response.json()["detail"] and "10.0.0.1" in response.json()["detail"]


def test_callbacks_need_a_secret(client: TestClient, state: Any) -> None:
    state.jobs.settings = state.settings.model_copy(update={"webhook_secret": None})
    response = client.post("/v1/jobs", json={"data": [ROW], "callback_url": "http://127.0.0.1/"})
    assert response.status_code == 422 and "MLQUEUE_WEBHOOK_SECRET" in response.json()["detail"]


def test_a_finished_job_is_delivered_signed_after_two_failures(
    client: TestClient,
    settings: Settings,
    server: fakeredis.FakeServer,
    receiver: str,
    publisher: FakePublisher,
) -> None:
    redis = fakeredis.FakeRedis(server=server)
    job = client.post("/v1/jobs", json={"data": [ROW], "callback_url": receiver}).json()
    job_id = job["job_id"]
    assert client.get(f"/v1/jobs/{job_id}").json()["webhook"] == {
        "state": "pending",
        "attempts": 0,
        "last_status": None,
    }
    sent: list[tuple[str, dict[str, Any], str]] = []
    sweep = WebhookSweep(redis, lambda t, _m, kw, q: sent.append((t, dict(kw), q)), 1.0)
    assert sweep.sweep() == 1 and sent == [(webhooks.DELIVER, {"job_id": job_id}, webhooks.QUEUE)]
    Receiver.plan = [500, 503]
    assert deliver(redis, settings, job_id) == "retrying"
    due = redis.zscore(webhooks.DUE, job_id)
    assert deliver(redis, settings, job_id) == "retrying"
    assert redis.zscore(webhooks.DUE, job_id) > due  # backed off further
    assert deliver(redis, settings, job_id) == "delivered"
    assert redis.zscore(webhooks.DUE, job_id) is None
    view = client.get(f"/v1/jobs/{job_id}").json()
    assert view["webhook"] == {"state": "delivered", "attempts": 3, "last_status": 200}
    assert len(Receiver.seen) == 3
    ids = {r["headers"][webhooks.DELIVERY_HEADER] for r in Receiver.seen}
    assert len(ids) == 1  # one delivery id, reused by every attempt
    last = Receiver.seen[-1]
    assert webhooks.verify(
        SECRET,
        last["headers"][webhooks.SIGNATURE_HEADER],
        last["body"],
        now=int(time.time()),
    )
    payload = orjson.loads(last["body"])
    assert payload == {
        "job_id": job_id,
        "status": "succeeded",
        "model": "demo",
        "version": "1",
        "error": None,
        "result_url": f"/v1/jobs/{job_id}/result",
        "data": [pytest.approx(sum(ROW))],
    }
    assert deliver(redis, settings, job_id) == "delivered" and len(Receiver.seen) == 3


def test_a_receiver_that_keeps_failing_is_given_up(
    client: TestClient, settings: Settings, server: fakeredis.FakeServer, receiver: str
) -> None:
    redis = fakeredis.FakeRedis(server=server)
    job_id = client.post("/v1/jobs", json={"data": [ROW], "callback_url": receiver}).json()[
        "job_id"
    ]
    Receiver.plan = [500] * 5
    assert [deliver(redis, settings, job_id) for _ in range(3)] == [
        "retrying",
        "retrying",
        "failed",
    ]
    assert client.get(f"/v1/jobs/{job_id}").json()["webhook"]["state"] == "failed"
    assert redis.zscore(webhooks.DUE, job_id) is None


def test_an_unfinished_job_is_looked_at_again_later(
    client: TestClient, server: fakeredis.FakeServer, publisher: FakePublisher, receiver: str
) -> None:
    publisher.run = False
    redis = fakeredis.FakeRedis(server=server)
    job_id = client.post("/v1/jobs", json={"data": [ROW], "callback_url": receiver}).json()[
        "job_id"
    ]
    sweep = WebhookSweep(redis, lambda *_: pytest.fail("sent too early"), 1.0)
    assert sweep.sweep() == 0
    assert redis.zscore(webhooks.DUE, job_id) > time.time()


def test_backoff_doubles_with_bounded_jitter() -> None:
    assert [webhooks.backoff(a, 30, 0) for a in (1, 2, 3)] == [30, 60, 120]
    assert webhooks.backoff(2, 30, 1) == pytest.approx(72) and webhooks.backoff(2, 30, -1) == 48


def test_a_retry_reports_to_the_same_receiver(
    client: TestClient, server: fakeredis.FakeServer, receiver: str, publisher: FakePublisher
) -> None:
    publisher.run = False
    old = client.post("/v1/jobs", json={"data": [ROW], "callback_url": receiver}).json()["job_id"]
    assert client.delete(f"/v1/jobs/{old}").status_code == 200
    new = client.post(f"/v1/jobs/{old}/retry").json()["job_id"]
    view = client.get(f"/v1/jobs/{new}").json()
    assert view["retry_of"] == old
    assert view["webhook"] == {"state": "pending", "attempts": 0, "last_status": None}
    redis = fakeredis.FakeRedis(server=server)
    assert redis.hget(jobstore.job_key(new), "callback_url") == receiver.encode()


def test_a_public_url_makes_result_url_absolute(
    client: TestClient, settings: Settings, server: fakeredis.FakeServer, receiver: str
) -> None:
    redis = fakeredis.FakeRedis(server=server)
    job_id = client.post("/v1/jobs", json={"data": [ROW], "callback_url": receiver}).json()[
        "job_id"
    ]
    public = settings.model_copy(update={"public_url": "https://mlqueue.example.com/api/"})
    Receiver.plan = []
    assert deliver(redis, public, job_id) == "delivered"
    payload = orjson.loads(Receiver.seen[-1]["body"])
    assert payload["result_url"] == f"https://mlqueue.example.com/api/v1/jobs/{job_id}/result"
