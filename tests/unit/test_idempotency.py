"""`Idempotency-Key` on POST /v1/jobs and POST /v1/jobs/csv: one job per key and body."""

from __future__ import annotations

import asyncio

import fakeredis
import httpx
import pytest
from fastapi.testclient import TestClient

from gateway import idempotency, keys
from gateway.state import GatewayState
from shared.settings import Settings
from tests.unit.conftest import FakePublisher

ROW = [0.01 * i for i in range(10)]
KEY_A, KEY_B = keys.new_key(), keys.new_key()
FEATURES = "age,sex,bmi,bp,s1,s2,s3,s4,s5,s6\n"
CSV = (FEATURES + "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0\n").encode()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"api_keys": [keys.digest(KEY_A), keys.digest(KEY_B)]})


def post(
    client: TestClient, key: str, idem: str, rows: list[list[float]] | None = None
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": idem}
    return client.post("/v1/jobs", json={"data": rows or [ROW]}, headers=headers)


def upload(client: TestClient, idem: str, data: bytes = CSV, **form: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {KEY_A}", "Idempotency-Key": idem}
    files = {"file": ("d.csv", data, "text/csv")}
    return client.post("/v1/jobs/csv", data=form, files=files, headers=headers)


def test_a_retry_gets_the_original_answer_and_no_second_job(
    client: TestClient, publisher: FakePublisher
) -> None:
    first = post(client, KEY_A, "order-42")
    again = post(client, KEY_A, "order-42")
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert len(publisher.sent) == 1


def test_the_same_key_with_another_body_is_a_422(client: TestClient) -> None:
    assert post(client, KEY_A, "k").status_code == 202
    other = post(client, KEY_A, "k", [[0.5] * 10])
    assert other.status_code == 422
    assert "different request body" in other.json()["detail"]


def test_keys_are_scoped_to_the_api_key(client: TestClient, publisher: FakePublisher) -> None:
    a = post(client, KEY_A, "shared").json()
    b = post(client, KEY_B, "shared").json()
    assert a["job_id"] != b["job_id"] and len(publisher.sent) == 2


def test_a_refused_submit_releases_the_key(client: TestClient) -> None:
    bad = post(client, KEY_A, "k", [[1.0, 2.0]])
    assert bad.status_code == 422
    assert "row 0 has 2 features" in bad.json()["detail"]
    assert post(client, KEY_A, "k").status_code == 202


@pytest.mark.parametrize("idem", ["x" * 256, "with space", "tab\there", "ключ".encode()])
def test_a_malformed_key_is_a_422_naming_the_header(client: TestClient, idem: str | bytes) -> None:
    headers = {"Authorization": f"Bearer {KEY_A}"}
    response = client.post(
        "/v1/jobs", json={"data": [ROW]}, headers={**headers, "Idempotency-Key": idem}
    )
    assert response.status_code == 422
    assert "Idempotency-Key" in response.json()["detail"]


def test_longest_and_punctuated_keys_are_accepted(client: TestClient) -> None:
    assert post(client, KEY_A, "~" * 255).status_code == 202
    assert post(client, KEY_A, "a:b/c=d!").status_code == 202


@pytest.mark.anyio
async def test_concurrent_submits_with_one_key_make_one_job(
    state: GatewayState, publisher: FakePublisher
) -> None:
    publisher.run = False
    answers = await asyncio.gather(
        *(state.jobs.submit_once([ROW], "default", "o", "same") for _ in range(10))
    )
    assert len({a.accepted.job_id for a in answers}) == 1
    assert sum(not a.replayed for a in answers) == 1
    assert len(publisher.sent) == 1


def test_a_request_still_in_progress_is_a_409_with_retry_after(
    client: TestClient, server: fakeredis.FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(idempotency, "WAIT_SECONDS", 0.1)
    owner = keys.owner_id(keys.digest(KEY_A))
    redis = fakeredis.FakeRedis(server=server)
    redis.set(idempotency._name(owner, "busy"), b'{"fp": ""}')  # a claim that never binds
    response = post(client, KEY_A, "busy")
    assert response.status_code == 409
    assert response.headers["retry-after"] == "1"
    assert "still in progress" in response.json()["detail"]


def test_a_csv_retry_is_replayed_without_a_second_job(
    client: TestClient, publisher: FakePublisher
) -> None:
    first = upload(client, "file-1", id_column="")
    sent = len(publisher.sent)
    again = upload(client, "file-1")
    assert again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert len(publisher.sent) == sent


@pytest.mark.parametrize(
    ("data", "form"),
    [(CSV + b"0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.1\n", {}), (CSV, {"on_error": "skip"})],
)
def test_a_csv_with_another_file_or_options_is_a_422(
    client: TestClient, publisher: FakePublisher, data: bytes, form: dict[str, str]
) -> None:
    assert upload(client, "file-2").status_code == 202
    sent = len(publisher.sent)
    other = upload(client, "file-2", data, **form)
    assert other.status_code == 422
    assert "different request body" in other.json()["detail"]
    assert len(publisher.sent) == sent


def test_a_csv_duplicate_during_the_upload_is_a_409(
    client: TestClient, server: fakeredis.FakeServer
) -> None:
    owner = keys.owner_id(keys.digest(KEY_A))
    fakeredis.FakeRedis(server=server).set(idempotency._name(owner, "up"), b'{"fp": ""}')
    response = upload(client, "up")
    assert response.status_code == 409
    assert response.headers["retry-after"] == "1"


def test_a_bound_key_expires_with_the_setting(
    client: TestClient, server: fakeredis.FakeServer, settings: Settings
) -> None:
    post(client, KEY_A, "ttl")
    owner = keys.owner_id(keys.digest(KEY_A))
    ttl = fakeredis.FakeRedis(server=server).ttl(idempotency._name(owner, "ttl"))
    assert settings.idempotency_ttl - 5 < ttl <= settings.idempotency_ttl


def test_a_malformed_duplicate_upload_is_a_400_not_a_500(client: TestClient) -> None:
    assert upload(client, "bad-body").status_code == 202
    boundary = "a222103b9b30b1f9e8be6882ecedb1d2"
    headers = {
        "Authorization": f"Bearer {KEY_A}",
        "Idempotency-Key": "bad-body",
        "Content-Type": f"multipart/form-data; boundary={boundary}",
    }
    body = f"--{boundary}\r\n[]--{boundary}--\r\n".encode()  # found by schemathesis
    response = client.post("/v1/jobs/csv", content=body, headers=headers)
    assert response.status_code == 400  # main's MalformedRequest
    assert response.json()["title"] == "MalformedRequest"
    assert "malformed multipart body" in response.json()["detail"]
    fresh = {**headers, "Idempotency-Key": "other"}
    response = client.post("/v1/jobs/csv", content=body, headers=fresh)
    assert response.status_code == 400
