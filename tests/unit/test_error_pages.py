"""Error reports stay small: cells quoted in 40 characters at most, `/errors` in pages."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient

from shared import csvjobs
from shared.features import EXCERPT_CHARS
from shared.settings import Settings
from tests.unit.conftest import FakePublisher
from tests.unit.test_csv import FEATURES, table, to_csv, upload

HUGE = "1" * 130_000  # parses as infinity: a non-finite value whose text is 130 kB


@pytest.fixture
def settings(model_dir: Path) -> Settings:
    return Settings(model_dir=model_dir, default_model="demo", csv_chunk_rows=100)


def lines_with(rows: int, bad: dict[int, str]) -> bytes:
    lines = to_csv(table(rows), FEATURES).decode().splitlines()
    for i, cell in bad.items():  # data line i (0-based) gets `cell` as its first value
        lines[i + 1] = cell + lines[i + 1][lines[i + 1].index(",") :]
    return ("\n".join(lines) + "\n").encode()


def test_a_huge_cell_is_quoted_in_40_characters_everywhere(client: TestClient) -> None:
    job = upload(client, lines_with(3, {1: HUGE}))
    job_id = job["job_id"]
    status = client.get(f"/v1/jobs/{job_id}")
    assert status.json()["status"] == "failed"
    assert len(status.content) < 2_000  # the status body stays small
    message = status.json()["error"]["message"]
    assert message.startswith("line 3, column 1 (age): non-finite value '1111")
    quoted = message.split("'")[1]
    assert len(quoted) == EXCERPT_CHARS and quoted.endswith("\u2026")
    errors = client.get(f"/v1/jobs/{job_id}/errors")
    assert len(errors.content) < 2_000
    assert errors.json()["errors"][0]["msg"] == f"non-finite value '{quoted}'"


def test_a_huge_header_name_is_quoted_in_40_characters(client: TestClient) -> None:
    header = ",".join([*FEATURES, "x" * 100_000, *(f"extra{i}" for i in range(50))])
    response = client.post(
        "/v1/jobs/csv", files={"file": ("d.csv", (header + "\n1\n").encode(), "text/csv")}
    )
    assert response.status_code == 422
    assert len(response.content) < 2_000
    assert "(and 46 more)" in response.json()["detail"]


def test_errors_are_listed_in_pages_that_follow_the_cursor(client: TestClient) -> None:
    bad = {i: "oops" for i in range(0, 450, 2)}  # 225 bad lines over 5 chunks
    job = upload(client, lines_with(450, bad), on_error="skip")
    seen: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        page = client.get(f"/v1/jobs/{job['job_id']}/errors", params=params).json()
        assert len(page["errors"]) <= 100
        seen += [e["line"] for e in page["errors"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert pages < 10
    assert pages == 3
    assert seen == [i + 2 for i in sorted(bad)]  # every bad line once, in file order
    assert page["rows_skipped"] == 225


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 1001}, {"cursor": "x"}])
def test_a_bad_limit_or_cursor_is_422(client: TestClient, params: dict[str, object]) -> None:
    job = upload(client, lines_with(3, {1: "oops"}), on_error="skip")
    response = client.get(f"/v1/jobs/{job['job_id']}/errors", params=params)
    assert response.status_code == 422, response.text


def test_an_errors_page_is_capped_in_bytes(client: TestClient, publisher: FakePublisher) -> None:
    # Lines stored before messages were cut (2 kB each) still make a bounded page.
    job = upload(client, lines_with(3, {1: "oops"}), on_error="skip")
    job_id = str(job["job_id"])
    legacy = [{"line": n, "msg": "m" * 2_000} for n in range(1000)]
    publisher.runtime.jobs.redis.set(csvjobs.err_key(job_id, 0), orjson.dumps(legacy))
    response = client.get(f"/v1/jobs/{job_id}/errors")
    assert len(response.content) < 200 * 1024
    page = response.json()
    assert page["next_cursor"] is not None and len(page["errors"]) < 1000
    rest = client.get(f"/v1/jobs/{job_id}/errors", params={"cursor": page["next_cursor"]})
    lines = [e["line"] for e in page["errors"] + rest.json()["errors"]]
    assert lines == list(range(1000))
