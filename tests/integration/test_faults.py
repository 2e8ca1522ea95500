"""Faults on the real system: poison jobs, time limits, tampered models, pickles, duplicates,
a killed prefork child, and keys that never expire.

The session's worker runs with a 5 s soft and 7 s hard time limit (see conftest). Test-only
models (tests/integration/models.py) predict row sums, slowly or not at all.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from celery import Celery
from kombu import Connection

from devrun.processes import children
from shared import jobstore
from tests.integration.conftest import System, wait_for
from tests.integration.models import Exploding, Sleepy, add_model, row_sums

pytestmark = pytest.mark.integration
ROWS = [[0.5 * i + j for j in range(10)] for i in range(4)]
FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]


@pytest.fixture(scope="module")
def pidfile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pids") / "sleepy.pid"


@pytest.fixture(scope="module", autouse=True)
def fault_models_in_the_registry(model_dir: Path, pidfile: Path) -> Iterator[None]:
    """Adds the test models to the session's registry, and removes them afterwards."""
    names = {
        "sleepy": Sleepy(3.0, pidfile=str(pidfile)),
        "soft-limit": Sleepy(30.0),
        "hard-limit": Sleepy(30.0, ignore_soft_limit=True),
        "poison": Exploding(),
        "tampered": Sleepy(0.0),
    }
    for name, estimator in names.items():
        add_model(model_dir, name, estimator)
    try:
        yield
    finally:
        for name in names:
            for path in sorted((model_dir / name).rglob("*"), reverse=True):
                path.unlink() if path.is_file() else path.rmdir()
            (model_dir / name).rmdir()


def submit(http: httpx.Client, rows: list[list[float]], model: str = "default") -> str:
    response = http.post("/v1/jobs", json={"data": rows, "model": model})
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


def final(http: httpx.Client, job_id: str, timeout: float = 30) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view: dict[str, object] = http.get(f"/v1/jobs/{job_id}").json()
        if view["status"] in ("succeeded", "failed", "cancelled"):
            return view
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish within {timeout} s")


def log_lines(system: System, **match: object) -> list[dict[str, object]]:
    lines = []
    for raw in system.worker_log.read_text(errors="replace").splitlines():
        if raw.startswith("{"):
            entry = json.loads(raw)
            if all(entry.get(k) == v for k, v in match.items()):
                lines.append(entry)
    return lines


def still_serves(http: httpx.Client) -> None:
    job_id = submit(http, ROWS)
    response = http.get(f"/v1/jobs/{job_id}/result", params={"wait": 20})
    assert response.status_code == 200 and len(response.json()["data"]) == len(ROWS)


def test_a_poison_job_fails_with_its_error_and_the_worker_keeps_serving(
    http: httpx.Client,
) -> None:
    job_id = submit(http, ROWS, "poison")
    view = final(http, job_id)
    assert view["status"] == "failed"
    assert view["error"] == {
        "type": "PredictionFailed",
        "message": "ValueError: boom: this model always fails",
    }
    result = http.get(f"/v1/jobs/{job_id}/result")
    assert result.status_code == 409 and "boom" in result.json()["detail"]
    still_serves(http)


def test_soft_and_hard_time_limits_fail_the_job_cleanly(http: httpx.Client, system: System) -> None:
    soft, hard = submit(http, ROWS, "soft-limit"), submit(http, ROWS, "hard-limit")
    soft_view, hard_view = final(http, soft), final(http, hard)
    assert soft_view["status"] == hard_view["status"] == "failed"
    assert soft_view["error"] == {
        "type": "TimeLimitExceeded",
        "message": "the prediction exceeded its time limit",
    }
    assert hard_view["error"] == {
        "type": "TimeLimitExceeded",
        "message": "the prediction exceeded its hard time limit of 7 s",
    }
    assert "Hard time limit (7" in system.worker_log.read_text()
    still_serves(http)


def test_a_tampered_artifact_is_refused_and_the_worker_says_why(
    http: httpx.Client, system: System, model_dir: Path
) -> None:
    artifact = model_dir / "tampered" / "1" / "model.joblib"
    artifact.write_bytes(artifact.read_bytes() + b"\x00")  # any change breaks the sha256
    job_id = submit(http, ROWS, "tampered")
    view = final(http, job_id)
    assert view["status"] == "failed"
    error = view["error"]
    assert isinstance(error, dict) and error["type"] == "ModelError"
    assert "does not match the manifest" in error["message"]
    assert "refusing to load it" in error["message"]
    logged = [
        e for e in log_lines(system, level="ERROR") if str(e.get("model")).startswith("tampered")
    ]
    assert any("does not match the manifest" in str(e["event"]) for e in logged), logged
    still_serves(http)


class _Marker:
    """Unpickling this creates a file: proof that a worker deserialized a pickle."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


def test_a_pickled_message_is_refused_without_running_it(
    http: httpx.Client, system: System, tmp_path: Path
) -> None:
    marker = tmp_path / "unpickled"
    task_id = str(uuid.uuid4())
    with Connection(system.redis_url) as conn:
        conn.Producer().publish(
            ((), {"rows": _Marker(str(marker))}, {}),
            routing_key="mlqueue",
            serializer="pickle",
            headers={"lang": "py", "task": "mlqueue.predict", "id": task_id, "retries": 0},
        )
    wait_for(lambda: "untrusted content" in system.worker_log.read_text(), timeout=20)
    assert "application/x-python-serialize" in system.worker_log.read_text()
    still_serves(http)
    assert not marker.exists()
    assert system.redis().exists(jobstore.job_key(task_id)) == 0  # the task never started
    assert system.redis().llen("mlqueue") == 0  # and the message is gone, not redelivered


def test_a_task_sent_twice_runs_twice_but_stores_one_result(system: System) -> None:
    app = Celery(broker=system.redis_url, backend=system.redis_url)
    job_id = str(uuid.uuid4())
    kwargs = {"rows": ROWS, "model": "demo"}
    first = app.send_task("mlqueue.predict", kwargs=kwargs, task_id=job_id, queue="mlqueue")
    predictions = first.get(timeout=20)["predictions"]
    finished_at = system.redis().hget(jobstore.job_key(job_id), "finished_at")
    # The same task id again, as a redelivery would; even with other rows it must not win.
    other = {"rows": ROWS[:1], "model": "demo"}
    again = app.send_task("mlqueue.predict", kwargs=other, task_id=job_id, queue="mlqueue")
    # It really ran twice: the second run found the job ended and answered from the store.
    wait_for(lambda: log_lines(system, event="job already ended", job_id=job_id) != [])
    assert again.get(timeout=20)["predictions"] == predictions
    app.close()
    stored = system.redis().hmget(jobstore.job_key(job_id), ["result", "finished_at"])
    assert json.loads(stored[0]) == predictions and stored[1] == finished_at


def test_a_redelivered_batch_does_not_change_the_result(http: httpx.Client, system: System) -> None:
    job_id = submit(http, ROWS)
    first = http.get(f"/v1/jobs/{job_id}/result", params={"wait": 20}).json()
    finished_at = http.get(f"/v1/jobs/{job_id}").json()["finished_at"]
    app = Celery(broker=system.redis_url, backend=system.redis_url)
    # The gateway's batch message again, with other rows for the same job.
    message_id = str(uuid.uuid4())
    again = {"jobs": [{"id": job_id, "rows": ROWS[:1]}], "model": "demo:1"}
    app.send_task("mlqueue.predict_batch", kwargs=again, task_id=message_id, queue="mlqueue")
    app.close()
    # Coalesced by the consumer (`worker.batch_strategy`): its batch's line names the message.
    ran = ("batches done", message_id)
    lines = system.worker_log.read_text
    wait_for(lambda: any(all(s in line for s in ran) for line in lines().splitlines()))
    assert http.get(f"/v1/jobs/{job_id}/result").json() == first
    assert http.get(f"/v1/jobs/{job_id}").json()["finished_at"] == finished_at


def test_sigkill_of_a_prefork_child_mid_job_completes_the_job_once(
    http: httpx.Client, system: System, pidfile: Path
) -> None:
    assert system.worker is not None
    pidfile.unlink(missing_ok=True)
    job_id = submit(http, ROWS, "sleepy")
    wait_for(lambda: pidfile.exists() and pidfile.read_text() != "", timeout=20)
    child = int(pidfile.read_text().split()[0])
    assert child in children(system.worker.pid)  # a prefork child, not the main process
    killed = time.monotonic()
    os.kill(child, signal.SIGKILL)
    view = final(http, job_id, timeout=40)
    recovery = time.monotonic() - killed
    assert view["status"] == "succeeded"
    assert http.get(f"/v1/jobs/{job_id}/result").json()["data"] == row_sums(ROWS)
    calls = [int(pid) for pid in pidfile.read_text().split()]
    assert len(calls) == 2 and calls[1] != child  # killed once, then run once in another child
    assert system.worker.poll() is None  # the main process lived on
    print(f"child SIGKILL: job done {recovery:.1f} s after the kill (model sleeps 3 s)")


def test_every_key_expires_but_the_queue_and_kombus_bookkeeping(
    http: httpx.Client, system: System
) -> None:
    job_id = submit(http, ROWS)
    assert http.get(f"/v1/jobs/{job_id}/result", params={"wait": 20}).status_code == 200
    # A CSV job too, with a bad line skipped: its chunk, id and error keys must expire as well.
    lines = ["id," + ",".join(FEATURES)] + [
        f"r{i}," + ",".join("0.01" for _ in FEATURES) for i in range(5)
    ]
    csv = "\n".join([*lines, "bad,x" + ",0" * 9]).encode()
    response = http.post(
        "/v1/jobs/csv",
        params={"id_column": "id", "on_error": "skip"},
        files={"file": ("in.csv", csv, "text/csv")},
    )
    assert response.status_code == 202, response.text
    csv_id = response.json()["job_id"]
    assert http.get(f"/v1/jobs/{csv_id}/result", params={"wait": 20}).status_code == 200
    redis = system.redis()
    # Kombu acks (removes the unacked entry) just after the task's result is stored.
    wait_for(lambda: redis.hlen("unacked") == 0, timeout=10)
    keys = sorted(k.decode() for k in redis.scan_iter(count=1000))
    assert jobstore.job_key(job_id) in keys
    assert [k for k in keys if k.startswith(f"{jobstore.job_key(csv_id)}:")]  # its chunk keys
    # Gateway jobs travel in batch messages, whose result Celery does not store; tasks sent
    # directly (earlier tests) have their `celery-task-meta-*` keys.
    assert any(k.startswith("celery-task-meta-") for k in keys)
    without_ttl = [k for k in keys if redis.ttl(k) == -1]
    expiring = {k: redis.ttl(k) for k in keys if k.startswith(("mlqueue:", "celery-task-meta-"))}
    # Every one has a TTL (-1 means none; -2, gone since the scan: a short lock, or the outbox
    # set emptied as its last job started; 0, under a second left).
    assert expiring
    assert [k for k, ttl in expiring.items() if ttl == -1] == []
    assert expiring[jobstore.job_key(job_id)] > 0
    # What may live without a TTL: the queue list (empty lists vanish), kombu's exchange
    # bindings (one small set per queue) and its unacked bookkeeping (bounded by in-flight jobs).
    allowed = {"mlqueue", "unacked", "unacked_index"}
    unbounded = [k for k in without_ttl if k not in allowed and not k.startswith("_kombu.binding")]
    assert unbounded == [], without_ttl
    assert max(expiring.values()) <= 86_400
