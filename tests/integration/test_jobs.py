"""The JSON job flow on real Redis, a real Celery worker and a real uvicorn gateway."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
from celery import Celery

from shared import jobstore
from tests.integration.conftest import System, consumer_paused, wait_for
from worker.sklearn_model import SklearnModel

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def estimator(model_dir: Path) -> SklearnModel:
    return SklearnModel.load(model_dir / "demo" / "1" / "model.skops")


def expected(estimator: SklearnModel, rows: list[list[float]]) -> list[float]:
    return [float(v) for v in estimator.predict(np.asarray(rows))]


def submit(http: httpx.Client, rows: list[list[float]], **extra: object) -> str:
    response = http.post("/v1/jobs", json={"data": rows, **extra})
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/v1/jobs/{response.json()['job_id']}"
    return str(response.json()["job_id"])


def test_submit_poll_result_equals_model_predict(
    http: httpx.Client, estimator: SklearnModel, diabetes_rows: list[list[float]]
) -> None:
    rows = diabetes_rows[:37]
    job_id = submit(http, rows)
    wait_for(lambda: http.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded")
    view = http.get(f"/v1/jobs/{job_id}").json()
    assert view["n_rows"] == 37 and view["model"] == "demo" and view["version"] == "1"
    result = http.get(f"/v1/jobs/{job_id}/result")
    assert result.status_code == 200
    assert result.json()["data"] == expected(estimator, rows)


def test_long_poll_returns_when_the_job_ends(
    http: httpx.Client, estimator: SklearnModel, diabetes_rows: list[list[float]]
) -> None:
    for rows in (diabetes_rows[:1], diabetes_rows[100:400]):
        job_id = submit(http, rows)
        response = http.get(f"/v1/jobs/{job_id}/result", params={"wait": 10})
        assert response.status_code == 200
        assert response.json()["data"] == expected(estimator, rows)
        assert response.elapsed.total_seconds() < 5  # it woke on the event, not at the deadline


def test_legacy_predict_facade(
    http: httpx.Client, estimator: SklearnModel, diabetes_rows: list[list[float]]
) -> None:
    response = http.post("/predict", json={"data": diabetes_rows[:5]})
    assert response.status_code == 200
    assert response.json() == {"data": expected(estimator, diabetes_rows[:5])}
    csv = "\n".join(",".join(repr(v) for v in row) for row in diabetes_rows[:4])
    response = http.post("/predict_csv", files={"csv_file": ("d.csv", csv.encode(), "text/csv")})
    assert response.status_code == 200
    assert response.json()["data"] == pytest.approx(expected(estimator, diabetes_rows[:4]))


def test_unknown_id_and_bad_rows(http: httpx.Client) -> None:
    assert http.get("/v1/jobs/6f1c1ad5-0b8e-4a59-8a47-3c5ad6d1e000").status_code == 404
    response = http.post("/v1/jobs", json={"data": [[1.0, 2.0], [1.0] * 10]})
    assert response.status_code == 422
    assert "row 0 has 2 features, expected 10" in response.json()["detail"]
    response = http.post("/v1/jobs", json={"data": [[1.0] * 9 + ["x"]]})
    assert response.status_code == 422
    assert response.json()["detail"].startswith("data: row 0, column 9:")


def test_cancel_a_queued_job(
    http: httpx.Client, system: System, estimator: SklearnModel, diabetes_rows: list[list[float]]
) -> None:
    # Pause consumption so the job is certainly still queued when it is cancelled.
    with consumer_paused(system):
        job_id = submit(http, diabetes_rows[:3])
        response = http.delete(f"/v1/jobs/{job_id}")
        assert response.status_code == 200 and response.json()["status"] == "cancelled"
    after = submit(http, diabetes_rows[:2])
    assert http.get(f"/v1/jobs/{after}/result", params={"wait": 10}).status_code == 200
    # The worker took the cancelled message off the queue without predicting it.
    wait_for(lambda: system.redis().llen("mlqueue") == 0)
    result = http.get(f"/v1/jobs/{job_id}/result")
    assert result.status_code == 409
    assert result.json()["job"]["status"] == "cancelled"
    assert http.delete(f"/v1/jobs/{job_id}").status_code == 409


PLAIN_CELERY_CLIENT = textwrap.dedent(
    """
    import json, sys
    from celery import Celery

    app = Celery(broker=sys.argv[1], backend=sys.argv[1])
    rows = json.loads(sys.argv[2])
    result = app.send_task("mlqueue.predict", kwargs={"rows": rows}, queue="mlqueue")
    print(json.dumps({"id": result.id, "result": result.get(timeout=20)}))
    """
)


def test_a_plain_celery_client_enqueues_directly(
    http: httpx.Client, system: System, estimator: SklearnModel, diabetes_rows: list[list[float]]
) -> None:
    rows = diabetes_rows[:6]
    # A separate interpreter in an empty folder: only the celery package, no project imports.
    out = subprocess.run(
        [sys.executable, "-I", "-c", PLAIN_CELERY_CLIENT, system.redis_url, json.dumps(rows)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=system.workdir,
    )
    answer = json.loads(out.stdout)
    assert answer["result"] == {
        "predictions": expected(estimator, rows),
        "model": "demo",
        "version": "1",
    }
    view = http.get(f"/v1/jobs/{answer['id']}").json()
    assert view["status"] == "succeeded" and view["kind"] == "task" and view["n_rows"] == 6
    result = http.get(f"/v1/jobs/{answer['id']}/result").json()
    assert result["data"] == expected(estimator, rows)


def test_a_direct_task_with_bad_rows_fails_and_the_worker_keeps_serving(
    http: httpx.Client, system: System, estimator: SklearnModel, diabetes_rows: list[list[float]]
) -> None:
    app = Celery(broker=system.redis_url, backend=system.redis_url)
    bad = app.send_task("mlqueue.predict", kwargs={"rows": [[1.0, "x"]]}, queue="mlqueue")
    with pytest.raises(Exception, match="row 0: expected 10 features, got 2") as info:
        bad.get(timeout=20)
    assert type(info.value).__name__ == "InvalidInput"
    view = http.get(f"/v1/jobs/{bad.id}").json()
    assert view["status"] == "failed"
    assert view["error"] == {
        "type": "InvalidInput",
        "message": "row 0: expected 10 features, got 2",
    }
    good = app.send_task(
        "mlqueue.predict", kwargs={"rows": diabetes_rows[:2], "model": "demo"}, queue="mlqueue"
    )
    assert good.get(timeout=20)["predictions"] == expected(estimator, diabetes_rows[:2])
    app.close()


def test_finishing_publishes_the_job_id(http: httpx.Client, system: System) -> None:
    pubsub = system.redis().pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(jobstore.EVENTS)
    published: dict[str, jobstore.Announced | None] = {}  # a line per job that ended
    try:
        job_id = submit(http, [[0.0] * 10])
        deadline = time.monotonic() + 20
        while job_id not in published and time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.2)
            if message is not None:
                published.update(jobstore.ended(message["data"]))
    finally:
        pubsub.close()
    # A small success comes with its answer: the one a reader of the job gets.
    announced = published[job_id]
    assert announced is not None
    result = http.get(f"/v1/jobs/{job_id}/result").json()
    assert (announced.model, announced.version) == (result["model"], result["version"])
    assert orjson.loads(announced.predictions) == result["data"]
    # Published on the final transition, so long polls that wake on it find the job finished.
    assert http.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded"


def test_the_model_is_loaded_once_per_worker_process(
    http: httpx.Client, system: System, diabetes_rows: list[list[float]]
) -> None:
    ids = [submit(http, diabetes_rows[i : i + 3]) for i in range(40)]
    for job_id in ids:
        assert http.get(f"/v1/jobs/{job_id}/result", params={"wait": 10}).status_code == 200
    loads = [
        entry
        for line in system.worker_log.read_text().splitlines()
        if '"model loaded"' in line and (entry := json.loads(line))["model"] == "demo"
    ]
    # One load per prefork child (2 here) however many jobs ran: no process loads twice.
    pids = [entry["pid"] for entry in loads]
    assert len(pids) == len(set(pids))
    assert 1 <= len(pids) <= 2 + _children_replaced(system)
    assert all(entry["version"] == "1" for entry in loads)


def _children_replaced(system: System) -> int:
    # Children killed by tests (test_faults: SIGKILL, hard time limit) are replaced by new ones,
    # and a worker killed and started again (test_direct_batches) starts two new children.
    log = system.worker_log.read_text()
    restarts = max(0, log.count(' ready."') - 1)
    return log.count("Worker exited prematurely") + log.count("Hard time limit") + 2 * restarts


def test_a_job_whose_message_the_broker_lost_still_completes(
    http: httpx.Client, system: System, estimator: SklearnModel, diabetes_rows: list[list[float]]
) -> None:
    with consumer_paused(system):
        job_id = submit(http, diabetes_rows[:4])
        # What a Redis crash between kombu's pop and its bookkeeping does: the message is gone.
        assert system.redis().delete("mlqueue") == 1
    # The outbox sweep sends it again once its message cannot be anywhere (about 11 s here).
    result = http.get(f"/v1/jobs/{job_id}/result", params={"wait": 30}, timeout=40)
    assert result.status_code == 200
    assert result.json()["data"] == expected(estimator, diabetes_rows[:4])
    assert "re-sent messages the broker lost" in system.worker_log.read_text()
