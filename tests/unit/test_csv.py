"""Bulk CSV through the gateway (fakeredis, chunks scored inline by the summing mock model),
and the chunk parser and scorer called directly."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from shared import csvjobs, jobstore
from shared.csvformat import layout_for
from shared.settings import Settings
from tests.unit.conftest import FakePublisher
from worker.csv_chunks import score_chunk
from worker.csv_parse import parse_chunk, parse_exact, parse_fast
from worker.runtime import Runtime

FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]


@pytest.fixture
def settings(model_dir: Path) -> Settings:
    return Settings(model_dir=model_dir, default_model="demo", csv_chunk_rows=3)


def table(n: int, start: int = 0) -> list[list[float]]:
    return [[round(0.01 * (i + start) + 0.001 * j, 6) for j in range(10)] for i in range(n)]


def to_csv(rows: list[list[float]], header: list[str] | None = None, ids: bool = False) -> bytes:
    lines = [",".join(header)] if header else []
    lines += [(f"c{i}," if ids else "") + ",".join(map(repr, r)) for i, r in enumerate(rows)]
    return ("\n".join(lines) + "\n").encode()


def upload(client: TestClient, data: bytes, **form: str) -> dict[str, object]:
    response = client.post("/v1/jobs/csv", data=form, files={"file": ("d.csv", data, "text/csv")})
    assert response.status_code == 202, response.text
    body: dict[str, object] = response.json()
    assert response.headers["location"] == f"/v1/jobs/{body['job_id']}"
    return body


def result_rows(client: TestClient, job_id: object) -> list[list[str]]:
    response = client.get(f"/v1/jobs/{job_id}/result")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    return list(csv.reader(io.StringIO(response.text)))


def test_a_multi_chunk_upload_scores_every_row_in_order(client: TestClient) -> None:
    rows = table(11)
    job = upload(client, to_csv(rows, ["id", *FEATURES[::-1]], ids=True), id_column="id")
    assert job["n_rows"] == 11
    out = result_rows(client, job["job_id"])
    assert out[0] == ["id", "prediction"]
    assert [r[0] for r in out[1:]] == [f"c{i}" for i in range(11)]
    assert [float(r[1]) for r in out[1:]] == pytest.approx([sum(r) for r in rows])
    view = client.get(f"/v1/jobs/{job['job_id']}").json()
    assert view["status"] == "succeeded" and view["kind"] == "csv" and view["n_rows"] == 11
    assert view["progress"] == {
        "rows_done": 11,
        "rows_total": 11,
        "chunks_done": 4,
        "chunks_total": 4,
        "percent": 100.0,
        "rows_skipped": 0,
    }


def test_query_parameters_set_options_too(client: TestClient) -> None:
    response = client.post(
        "/v1/jobs/csv",
        params={"id_column": "key"},
        files={"file": ("d.csv", b"x,1,2,3,4,5,6,7,8,9,10\r\n", "text/csv")},
    )
    assert response.status_code == 202, response.text
    assert result_rows(client, response.json()["job_id"]) == [["key", "prediction"], ["x", "55.0"]]


@pytest.mark.parametrize(
    ("data", "status", "detail"),
    [
        (b"", 422, "the file is empty"),
        (b"\n \n", 422, "the file is empty"),
        (
            ",".join(FEATURES[:9]).encode() + b"\n",
            422,
            "line 1: header lacks the model's features ['s6']",
        ),
        (",".join(FEATURES).encode() + b"\n", 422, "header but no data lines"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", 422, "not text"),
        (b"1,2\xff\n", 422, "not UTF-8 text (byte 4)"),
    ],
)
def test_bad_files_are_refused_at_once(
    client: TestClient, data: bytes, status: int, detail: str
) -> None:
    response = client.post("/v1/jobs/csv", files={"file": ("d.csv", data, "text/csv")})
    assert response.status_code == status
    assert detail in response.json()["detail"]


def test_options_after_the_file_and_a_missing_file_are_422(client: TestClient) -> None:
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n\r\n'
        f'1,2,3,4,5,6,7,8,9,10\n\r\n--{boundary}\r\nContent-Disposition: form-data; name="model"'
        f"\r\n\r\ndemo\r\n--{boundary}--\r\n"
    ).encode()
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    response = client.post("/v1/jobs/csv", content=body, headers=headers)
    assert response.status_code == 422
    assert "'model' must come before the file" in response.json()["detail"]
    response = client.post("/v1/jobs/csv", data={"model": "demo"})
    assert response.status_code in (415, 422)
    response = client.post("/v1/jobs/csv", content=b"1,2", headers={"content-type": "text/csv"})
    assert response.status_code == 415


def test_bad_lines_fail_the_job_with_line_and_column(client: TestClient) -> None:
    data = to_csv(table(5), FEATURES).replace(b"0.04,", b"0.04x,", 1)
    job = upload(client, data)
    response = client.get(f"/v1/jobs/{job['job_id']}/result")
    assert response.status_code == 409
    assert "line 6, column 1 (age): non-numeric value '0.04x'" in response.json()["detail"]
    errors = client.get(f"/v1/jobs/{job['job_id']}/errors").json()
    assert errors["errors"] == [
        {"line": 6, "column": 1, "name": "age", "msg": "non-numeric value '0.04x'"}
    ]


def test_on_error_skip_scores_the_good_lines_and_reports_the_bad(client: TestClient) -> None:
    rows = table(7)
    lines = to_csv(rows).splitlines()
    lines[1] = lines[1].replace(b"0.011", b"inf")
    lines[5] = b"1,2"
    job = upload(client, b"\n".join(lines), on_error="skip")
    out = result_rows(client, job["job_id"])
    good = [r for i, r in enumerate(rows) if i not in (1, 5)]
    assert [float(r[0]) for r in out[1:]] == pytest.approx([sum(r) for r in good])
    report = client.get(f"/v1/jobs/{job['job_id']}/errors").json()
    assert report["rows_skipped"] == 2
    assert report["errors"] == [
        {"line": 2, "column": 2, "name": "sex", "msg": "non-finite value 'inf'"},
        {"line": 6, "column": None, "name": None, "msg": "expected 10 columns, got 2"},
    ]


def test_cancel_deletes_the_chunk_data(client: TestClient, publisher: FakePublisher) -> None:
    publisher.run = False  # chunks stay queued
    job = upload(client, to_csv(table(10)))
    redis = publisher.runtime.jobs.redis
    assert redis.exists(csvjobs.in_key(str(job["job_id"]), 0))
    assert client.delete(f"/v1/jobs/{job['job_id']}").json()["status"] == "cancelled"
    assert redis.keys(f"{jobstore.job_key(str(job['job_id']))}:*") == []
    # A chunk delivered after the cancel is skipped.
    sent = publisher.sent[0]["kwargs"]
    assert score_chunk(publisher.runtime, **sent) == "cancelled"


def test_a_redelivered_chunk_is_counted_once(client: TestClient, publisher: FakePublisher) -> None:
    publisher.run = False
    job_id = str(upload(client, to_csv(table(4)))["job_id"])
    first, second = (m["kwargs"] for m in publisher.sent)
    assert score_chunk(publisher.runtime, **first) == "running"
    assert score_chunk(publisher.runtime, **first) == "done"  # redelivered after it was scored
    assert score_chunk(publisher.runtime, **second) == "succeeded"
    assert [float(r[0]) for r in result_rows(client, job_id)[1:]] == pytest.approx(
        [sum(r) for r in table(4)]
    )


LAYOUT = layout_for(FEATURES, FEATURES, None, ignore_extra=False)


def test_the_fast_parser_declines_anything_doubtful() -> None:
    good = to_csv(table(3))
    parsed = parse_fast(good, LAYOUT, 3)
    assert parsed is not None and parsed.X.tolist() == table(3)
    for bad in (
        good.replace(b",", b",,", 1),  # too many fields
        good.replace(b",0.0", b"", 1),  # too few
        good.replace(b"0.001", b"nan", 1),
        good.replace(b"0.001", b"", 1),
        b'"1",' + good[2:],
    ):
        assert parse_fast(bad, LAYOUT, 3) is None
    assert parse_fast(good, LAYOUT, 4) is None  # the gateway counted another number of rows


def test_the_exact_parser_names_lines_across_quoted_newlines_and_crlf() -> None:
    layout = layout_for(["id", *FEATURES], FEATURES, "id", ignore_extra=False)
    data = b'"a\r\nb",' + b",".join([b"1"] * 10) + b'\r\n\r\n"c",1,2,3,4,5,6,7,8,9,\r\n'
    parsed = parse_exact(data, 10, layout)
    assert parsed.ids == ["a\r\nb"] and parsed.X.tolist() == [[1.0] * 10]
    assert parsed.errors == [{"line": 13, "column": 11, "name": "s6", "msg": "empty value"}]
    assert parse_chunk(data, 10, layout, 2).errors == parsed.errors


def test_score_chunk_writes_float64_predictions(runtime: Runtime) -> None:
    redis = runtime.jobs.redis
    record = jobstore.new_record("j", kind="csv", model="demo", n_rows=None)
    redis.hset(jobstore.job_key("j"), mapping={**record, "chunks_done": 0, "chunks_total": 1})
    redis.set(csvjobs.in_key("j", 0), to_csv(table(2)))
    kwargs = csvjobs.task_kwargs("j", 0, 1, 2, "demo:1", LAYOUT, "fail")
    assert score_chunk(runtime, **kwargs) == "succeeded"
    out = np.frombuffer(redis.get(csvjobs.out_key("j", 0)), dtype="<f8")
    assert out.tolist() == pytest.approx([sum(r) for r in table(2)])
    assert redis.exists(csvjobs.in_key("j", 0)) == 0
