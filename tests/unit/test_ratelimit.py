"""Per-key token buckets: 429 with Retry-After and the IETF RateLimit fields, overrides, pacing."""

from __future__ import annotations

import fakeredis
import httpx
import pytest
from fastapi.testclient import TestClient

from gateway import keys, ratelimit
from gateway.ratelimit import RateLimiter
from gateway.state import GatewayState
from shared.settings import RateLimit, Settings
from tests.unit.conftest import FakePublisher

ROW = [0.01 * i for i in range(10)]
KEY_A, KEY_B = keys.new_key(), keys.new_key()
OWNER_A = keys.owner_id(keys.digest(KEY_A))
LINE = b"0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0\n"
HEADER = b"age,sex,bmi,bp,s1,s2,s3,s4,s5,s6\n"


class Clock:
    """Stands in for time.time() in the limiter: the test moves it."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(ratelimit.time, "time", clock)
    return clock


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "api_keys": [keys.digest(KEY_A), keys.digest(KEY_B)],
            "rate_limit_jobs_per_second": 1.0,
            "rate_limit_jobs_burst": 3.0,
            "rate_limit_rows_per_second": 10.0,
            "rate_limit_rows_burst": 20.0,
            "rate_limit_overrides": {OWNER_A: RateLimit(jobs_per_second=100.0)},
            "csv_chunk_rows": 3,
        }
    )


def post(client: TestClient, key: str, n_rows: int = 1) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    return client.post("/v1/jobs", json={"data": [ROW] * n_rows}, headers=headers)


def test_a_burst_over_the_jobs_bucket_is_a_429_with_the_draft_headers(
    client: TestClient, clock: Clock, publisher: FakePublisher
) -> None:
    assert [post(client, KEY_B).status_code for _ in range(3)] == [202] * 3
    refused = post(client, KEY_B)
    assert refused.status_code == 429
    headers = refused.headers
    assert headers["retry-after"] == "1"
    assert headers["ratelimit-policy"] == '"jobs";q=3;w=3, "rows";q=20;w=2'
    assert headers["ratelimit"] == '"jobs";r=0;t=3, "rows";r=17;t=1'
    assert refused.json()["title"] == "RateLimited"
    assert len(publisher.sent) == 3  # the refused job was not queued
    clock.now += 1.0  # one token back
    assert post(client, KEY_B).status_code == 202
    assert post(client, KEY_B).status_code == 429


def test_rows_count_too_and_a_job_larger_than_the_burst_waits_for_a_full_bucket(
    client: TestClient, clock: Clock
) -> None:
    assert post(client, KEY_B, 15).status_code == 202
    refused = post(client, KEY_B, 10)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"  # 5 rows missing
    clock.now += 10
    # 30 rows cost the whole bucket (20): allowed once it is full.
    assert post(client, KEY_B, 30).status_code == 202


def test_an_override_replaces_the_defaults_for_its_key(client: TestClient, clock: Clock) -> None:
    # KEY_A: 100 jobs/s and no rows limit; KEY_B keeps 3 at once.
    assert all(post(client, KEY_A, 30).status_code == 202 for _ in range(10))
    assert [post(client, KEY_B).status_code for _ in range(4)][-1] == 429


def upload(client: TestClient, lines: int) -> httpx.Response:
    files = {"file": ("d.csv", HEADER + LINE * lines, "text/csv")}
    return client.post("/v1/jobs/csv", files=files, headers={"Authorization": f"Bearer {KEY_B}"})


def test_csv_uploads_take_a_job_token(client: TestClient, clock: Clock) -> None:
    assert [upload(client, 1).status_code for _ in range(4)] == [202, 202, 202, 429]


def test_a_csv_upload_over_the_rows_rate_is_slowed_down_not_refused(
    client: TestClient, clock: Clock, state: GatewayState
) -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock.now += seconds

    state.jobs.limits.sleep = sleep
    # Chunks of 3 rows (csv_chunk_rows); 20 tokens, 10/s: the 7th chunk (rows 19-21) waits.
    response = upload(client, 30)
    assert response.status_code == 202, response.text
    assert (
        client.get(
            f"/v1/jobs/{response.json()['job_id']}", headers={"Authorization": f"Bearer {KEY_B}"}
        ).json()["n_rows"]
        == 30
    )
    assert waits and sum(waits) == pytest.approx(1.0)  # 30 rows - 20 burst = 1 s at 10 rows/s


def test_limits_are_off_by_default(server: fakeredis.FakeServer) -> None:
    assert not Settings().rate_limit().enabled and Settings().rate_limit_overrides == {}
    assert not RateLimiter(fakeredis.FakeAsyncRedis(server=server), Settings()).enabled


def test_overrides_parse_from_json_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "MLQUEUE_RATE_LIMIT_OVERRIDES", '{"abc": {"jobs_per_second": 5, "rows_burst": 100}}'
    )
    assert Settings().rate_limit_overrides == {
        "abc": RateLimit(jobs_per_second=5.0, rows_burst=100.0)
    }
    monkeypatch.setenv("MLQUEUE_RATE_LIMIT_OVERRIDES", '{"abc": {"jobs": 5}}')
    with pytest.raises(ValueError, match="jobs"):
        Settings()
