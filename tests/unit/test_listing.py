"""`GET /v1/jobs`: the caller's jobs, newest first, cursor-paginated, filtered, per key."""

from __future__ import annotations

import fakeredis
import pytest
from fastapi.testclient import TestClient

from gateway import keys
from gateway.listing import Cursor, JobListing
from gateway.store import JobStore
from shared import jobstore
from shared.settings import Settings
from tests.unit.conftest import FakePublisher

ROW = [0.01 * i for i in range(10)]
KEY_A, KEY_B = keys.new_key(), keys.new_key()
CSV = b"age,sex,bmi,bp,s1,s2,s3,s4,s5,s6\n" + b"0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0\n"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"api_keys": [keys.digest(KEY_A), keys.digest(KEY_B)]})


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def submit(client: TestClient, key: str, rows: list[list[float]] | None = None) -> str:
    response = client.post("/v1/jobs", json={"data": rows or [ROW]}, headers=bearer(key))
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


def all_pages(client: TestClient, key: str, **params: object) -> list[list[dict[str, object]]]:
    pages, cursor = [], None
    for _ in range(100):  # bounded: more pages than any test makes
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = client.get("/v1/jobs", params=query, headers=bearer(key))
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append(body["jobs"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
    raise AssertionError("the cursor never ran out")


def test_pages_list_every_job_once_newest_first(client: TestClient) -> None:
    submitted = [submit(client, KEY_A) for _ in range(23)]
    pages = all_pages(client, KEY_A, limit=5)
    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
    listed = [job["job_id"] for page in pages for job in page]
    assert listed == submitted[::-1]
    assert all(job["status"] == "succeeded" for page in pages for job in page)


def test_a_full_last_page_has_no_cursor(client: TestClient) -> None:
    for _ in range(4):
        submit(client, KEY_A)
    assert [len(p) for p in all_pages(client, KEY_A, limit=2)] == [2, 2]


def test_other_keys_jobs_are_not_listed(client: TestClient) -> None:
    mine = submit(client, KEY_A)
    submit(client, KEY_B)
    listed = [job["job_id"] for page in all_pages(client, KEY_A) for job in page]
    assert listed == [mine]


def test_filters_by_status_and_kind(client: TestClient, publisher: FakePublisher) -> None:
    done = submit(client, KEY_A)
    publisher.run = False
    queued = submit(client, KEY_A)
    cancelled = submit(client, KEY_A)
    assert client.delete(f"/v1/jobs/{cancelled}", headers=bearer(KEY_A)).status_code == 200
    publisher.run = True
    files = {"file": ("d.csv", CSV, "text/csv")}
    csv = client.post("/v1/jobs/csv", files=files, headers=bearer(KEY_A)).json()["job_id"]

    def ids(**params: object) -> list[object]:
        return [job["job_id"] for page in all_pages(client, KEY_A, **params) for job in page]

    assert ids(status="queued") == [queued]
    assert ids(status="cancelled") == [cancelled]
    assert ids(status="succeeded") == [csv, done]
    assert ids(kind="csv") == [csv]
    assert ids(kind="json", status="succeeded") == [done]
    assert ids(kind="json") == [cancelled, queued, done]


def test_expired_records_are_skipped(client: TestClient, server: fakeredis.FakeServer) -> None:
    gone = submit(client, KEY_A)
    kept = submit(client, KEY_A)
    fakeredis.FakeRedis(server=server).delete(jobstore.job_key(gone))
    listed = [job["job_id"] for page in all_pages(client, KEY_A) for job in page]
    assert listed == [kept]


@pytest.mark.anyio
async def test_jobs_created_in_the_same_instant_are_each_listed_once(
    server: fakeredis.FakeServer,
) -> None:
    redis = fakeredis.FakeAsyncRedis(server=server)
    store, listing = JobStore(redis, 3600), JobListing(redis, 3600)
    records = [
        jobstore.new_record(f"job-{i:02}", kind="json", model="m", n_rows=1, owner="o")
        for i in range(7)
    ]
    for record in records:
        record["created_at"] = records[0]["created_at"]
    await store.create_many(records)
    listed, cursor = [], None
    for _ in range(10):
        page = await listing.page("o", 2, cursor)
        listed += [view.job_id for view in page.jobs]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert listed == [f"job-{i:02}" for i in reversed(range(7))]


@pytest.mark.parametrize("cursor", ["x", "!!!", Cursor(1.0, "").encode(), "bm90LWEtY3Vyc29y"])
def test_a_foreign_cursor_is_a_422_naming_it(client: TestClient, cursor: str) -> None:
    response = client.get("/v1/jobs", params={"cursor": cursor}, headers=bearer(KEY_A))
    assert response.status_code == 422
    assert response.json()["detail"].startswith("cursor: ")


def test_cursor_round_trips_ties_in_time() -> None:
    cursor = Cursor(1700000000.123456, "b")
    assert Cursor.decode(cursor.encode()) == cursor


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 101}, {"status": "x"}, {"kind": "x"}])
def test_bad_parameters_are_422(client: TestClient, params: dict[str, object]) -> None:
    assert client.get("/v1/jobs", params=params, headers=bearer(KEY_A)).status_code == 422
