"""Bulk CSV jobs on real Redis, a real Celery worker and uvicorn, with 100-line chunks."""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from shared import jobstore
from tests.integration.conftest import System, consumer_paused, wait_for
from worker.sklearn_model import SklearnModel

pytestmark = pytest.mark.integration

FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]


@pytest.fixture(scope="module")
def estimator(model_dir: Path) -> SklearnModel:
    return SklearnModel.load(model_dir / "demo" / "1" / "model.skops")


@pytest.fixture
def http(csv_system: System) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=csv_system.base_url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def rows(diabetes_rows: list[list[float]]) -> list[list[float]]:
    """1,000 real rows (10 chunks of 100 lines)."""
    return [diabetes_rows[i % len(diabetes_rows)] for i in range(1000)]


def predict(estimator: SklearnModel, rows: list[list[float]]) -> list[float]:
    return [float(v) for v in estimator.predict(np.asarray(rows))]


def to_csv(rows: list[list[float]], header: bool = True, newline: str = "\n") -> bytes:
    lines = [",".join(FEATURES)] if header else []
    lines += [",".join(map(repr, r)) for r in rows]
    return (newline.join(lines) + newline).encode()


def upload(http: httpx.Client, data: bytes, **form: str) -> str:
    response = http.post("/v1/jobs/csv", data=form, files={"file": ("in.csv", data, "text/csv")})
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


def result(http: httpx.Client, job_id: str) -> list[list[str]]:
    response = http.get(f"/v1/jobs/{job_id}/result", params={"wait": 30})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    return list(csv.reader(io.StringIO(response.text)))


def failure(http: httpx.Client, job_id: str) -> str:
    response = http.get(f"/v1/jobs/{job_id}/result", params={"wait": 30})
    assert response.status_code == 409, response.text
    return str(response.json()["detail"])


def test_multi_chunk_file_by_name_in_shuffled_order_with_ids(
    http: httpx.Client, estimator: SklearnModel, rows: list[list[float]]
) -> None:
    order = [3, 0, 9, 5, 1, 8, 2, 7, 6, 4]
    lines = ["s5,customer," + ",".join(FEATURES[i] for i in order if i != 8)]
    for n, row in enumerate(rows):
        cells = [repr(row[8]), f"cust-{n}", *(repr(row[i]) for i in order if i != 8)]
        lines.append(",".join(cells))
    job_id = upload(http, "\n".join(lines).encode() + b"\n", id_column="customer")
    out = result(http, job_id)
    assert out[0] == ["customer", "prediction"]
    assert [r[0] for r in out[1:]] == [f"cust-{n}" for n in range(1000)]
    assert [float(r[1]) for r in out[1:]] == predict(estimator, rows)
    view = http.get(f"/v1/jobs/{job_id}").json()
    assert view["status"] == "succeeded" and view["n_rows"] == 1000
    assert view["progress"]["chunks_total"] == 10 and view["progress"]["rows_total"] == 1000
    assert view["progress"]["percent"] == 100.0


def test_bom_crlf_quotes_no_final_newline_and_blank_trailing_lines(
    http: httpx.Client, estimator: SklearnModel, rows: list[list[float]]
) -> None:
    body = to_csv(rows[:250], newline="\r\n").decode()
    body = body.replace(repr(rows[7][2]), f'"{rows[7][2]!r}"')  # a quoted value
    body = body.replace("age,", '"age",', 1)
    for text in ("\ufeff" + body.rstrip("\r\n"), body + "\r\n\r\n  \r\n"):
        out = result(http, upload(http, text.encode()))
        assert [float(r[0]) for r in out[1:]] == predict(estimator, rows[:250])


def test_quoted_ids_with_commas_and_newlines_pass_through(
    http: httpx.Client, estimator: SklearnModel, rows: list[list[float]]
) -> None:
    ids = [f'name {n}, "the {n}th"\nline two' for n in range(150)]
    lines = ['"id",' + ",".join(FEATURES)]
    lines += [
        '"' + i.replace('"', '""') + '",' + ",".join(map(repr, r))
        for i, r in zip(ids, rows, strict=False)
    ]
    out = result(http, upload(http, "\n".join(lines).encode(), id_column="id"))
    assert [r[0] for r in out[1:]] == ids
    assert [float(r[1]) for r in out[1:]] == predict(estimator, rows[:150])


@pytest.mark.parametrize(
    ("line", "bad", "expected"),
    [
        (157, "1.0,2.0", "line 157: expected 10 columns, got 2"),
        (42, "0.1,0.2,abc,0.4,0.5,0.6,0.7,0.8,0.9,1.0", "line 42, column 3 (bmi): non-numeric"),
        (230, "0.1,,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0", "line 230, column 2 (sex): empty value"),
        (2, "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,inf", "line 2, column 10 (s6): non-finite"),
        (101, "nan,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0", "line 101, column 1 (age): non-finite"),
        (
            7,
            "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,4e38",
            "line 7, column 10 (s6): value 4e+38 is out",
        ),
    ],
)
def test_a_bad_line_fails_the_job_naming_line_and_column(
    http: httpx.Client,
    csv_system: System,
    rows: list[list[float]],
    line: int,
    bad: str,
    expected: str,
) -> None:
    lines = to_csv(rows[:300]).decode().splitlines()
    lines[line - 1] = bad
    job_id = upload(http, "\n".join(lines).encode())
    assert expected in failure(http, job_id)
    errors = http.get(f"/v1/jobs/{job_id}/errors").json()["errors"]
    assert errors[0]["line"] == line
    # The failed job's chunk data is gone.
    wait_for(lambda: not csv_system.redis().keys(f"{jobstore.job_key(job_id)}:*"))


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        (b"", "the file is empty"),
        (b"age,sex\n", "line 1: header lacks the model's features"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not text"),
        ("é,ü\n".encode("latin-1"), "not UTF-8 text"),
    ],
)
def test_files_refused_at_once(http: httpx.Client, data: bytes, detail: str) -> None:
    response = http.post("/v1/jobs/csv", files={"file": ("in.csv", data, "text/csv")})
    assert response.status_code == 422
    assert detail in response.json()["detail"]


def test_an_upload_over_the_limit_is_413_and_leaves_nothing(
    http: httpx.Client, csv_system: System, rows: list[list[float]]
) -> None:
    big = to_csv(rows) * 25  # ~5 MiB, over the 4 MiB limit
    response = http.post("/v1/jobs/csv", files={"file": ("in.csv", big, "text/csv")})
    assert response.status_code == 413

    def stream() -> Iterator[bytes]:  # no Content-Length: the limit is enforced while reading
        yield b'--xx\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n\r\n'
        for i in range(0, len(big), 65536):
            yield big[i : i + 65536]
        yield b"\r\n--xx--\r\n"

    headers = {"content-type": "multipart/form-data; boundary=xx"}
    try:
        response = http.post("/v1/jobs/csv", content=stream(), headers=headers)
        assert response.status_code == 413
    except httpx.TransportError:
        pass  # the server may close the connection while the client still sends
    redis = csv_system.redis()
    wait_for(lambda: not redis.keys("mlqueue:job:*:in:*"))


def test_on_error_skip_reports_the_skipped_lines(
    http: httpx.Client, estimator: SklearnModel, rows: list[list[float]]
) -> None:
    lines = to_csv(rows[:300]).decode().splitlines()
    lines[10] = lines[10].replace(",", ",x", 1)
    lines[250] = "1,2,3"
    job_id = upload(http, "\n".join(lines).encode(), on_error="skip")
    out = result(http, job_id)
    good = [r for i, r in enumerate(rows[:300]) if i + 2 not in (11, 251)]
    assert [float(r[0]) for r in out[1:]] == predict(estimator, good)
    report = http.get(f"/v1/jobs/{job_id}/errors").json()
    assert report["rows_skipped"] == 2
    assert [(e["line"], e["column"]) for e in report["errors"]] == [(11, 2), (251, None)]


def test_cancel_frees_the_chunk_data(
    http: httpx.Client, csv_system: System, rows: list[list[float]]
) -> None:
    with consumer_paused(csv_system):
        job_id = upload(http, to_csv(rows))
        redis = csv_system.redis()
        assert len(redis.keys(f"{jobstore.job_key(job_id)}:in:*")) == 10
        response = http.delete(f"/v1/jobs/{job_id}")
        assert response.status_code == 200 and response.json()["status"] == "cancelled"
        assert redis.keys(f"{jobstore.job_key(job_id)}:*") == []
    wait_for(lambda: csv_system.redis().llen("mlqueue") == 0)
    assert csv_system.redis().keys(f"{jobstore.job_key(job_id)}:*") == []
    assert http.get(f"/v1/jobs/{job_id}/result").status_code == 409


def test_a_worker_killed_mid_job_loses_and_duplicates_no_row(
    csv_system: System, estimator: SklearnModel, diabetes_rows: list[list[float]]
) -> None:
    rows = [diabetes_rows[i % len(diabetes_rows)] for i in range(6000)]  # 60 chunks
    redis = csv_system.redis()
    earlier = set(redis.keys("mlqueue:job:*:done"))  # done-sets of the module's other jobs
    accepted: dict[str, str] = {}

    def send() -> None:
        with httpx.Client(base_url=csv_system.base_url, timeout=90) as client:
            accepted["id"] = upload(client, to_csv(rows))

    uploader = threading.Thread(target=send)
    uploader.start()
    key: dict[str, str] = {}

    def scoring() -> bool:
        found = list(set(redis.keys("mlqueue:job:*:done")) - earlier)
        key.update(done=found[0].decode().removesuffix(":done") if found else "")
        return bool(found) and int(redis.hget(key["done"], "chunks_done") or 0) >= 3

    wait_for(scoring, timeout=60)
    assert csv_system.worker is not None
    os.killpg(csv_system.worker.pid, signal.SIGKILL)  # the main process and its children
    csv_system.worker.wait(10)
    assert int(redis.hget(key["done"], "chunks_done") or 0) < 60  # really mid-job
    csv_system.start_worker(name="w2")
    uploader.join(90)
    assert not uploader.is_alive()
    with httpx.Client(base_url=csv_system.base_url, timeout=60) as http:
        response = http.get(f"/v1/jobs/{accepted['id']}/result", params={"wait": 30})
        # On failure, say whether a message is stuck in Redis' unacked set (not yet restored).
        assert response.status_code == 200, (response.text, redis.hgetall("unacked"))
        out = list(csv.reader(io.StringIO(response.text)))
        assert [float(r[0]) for r in out[1:]] == predict(estimator, rows)
        view = http.get(f"/v1/jobs/{accepted['id']}").json()
    assert view["progress"]["chunks_done"] == 60 and view["n_rows"] == 6000


def test_a_chunk_whose_message_the_broker_lost_is_scored_all_the_same(
    csv_system: System, http: httpx.Client, estimator: SklearnModel, rows: list[list[float]]
) -> None:
    with consumer_paused(csv_system):
        job_id = upload(http, to_csv(rows[:300]))  # 3 chunks
        # What a crash between kombu's pop and its bookkeeping does: the messages are gone.
        assert csv_system.redis().delete("mlqueue") == 1
    # The outbox sweep sends the chunks again once their messages cannot be anywhere (~11 s).
    response = http.get(f"/v1/jobs/{job_id}/result", params={"wait": 30}, timeout=40)
    assert response.status_code == 200, response.text
    out = list(csv.reader(io.StringIO(response.text)))
    assert [float(r[0]) for r in out[1:]] == predict(estimator, rows[:300])


def test_the_cli_scores_a_file(
    csv_system: System, estimator: SklearnModel, rows: list[list[float]], tmp_path: Path
) -> None:
    source, target = tmp_path / "in.csv", tmp_path / "out.csv"
    source.write_bytes(to_csv(rows[:500]))
    cli = [str(Path(sys.executable).parent / "mlqueue"), "--url", csv_system.base_url]
    done = subprocess.run(
        [*cli, "score", str(source), "-o", str(target)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "500 predictions written to" in done.stderr
    out = list(csv.reader(io.StringIO(target.read_text())))
    assert out[0] == ["prediction"]
    assert [float(r[0]) for r in out[1:]] == predict(estimator, rows[:500])

    lines = to_csv(rows[:500]).decode().splitlines()
    lines[321] = lines[321].replace(",", ",oops", 1)
    source.write_text("\n".join(lines))
    bad = subprocess.run(
        [*cli, "score", str(source), "-o", str(tmp_path / "bad.csv")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 1
    assert "line 322, column 2 (sex): non-numeric value" in bad.stderr
    assert "Traceback" not in bad.stderr

    source.write_bytes(to_csv(rows) * 25)  # over the 4 MiB upload limit
    big = subprocess.run(
        [*cli, "score", str(source), "-o", str(tmp_path / "big.csv")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert big.returncode == 1
    assert "413" in big.stderr or "upload limit" in big.stderr
