"""Direct `mlqueue.predict` tasks, coalesced by the worker (`worker.direct_strategy`), on the real
system: each task still gets its own result, its own failure, and survives a killed worker.

Batches are made sure of by queueing the tasks while the worker's consumer is paused: once it
resumes, it takes them faster than a pool process can run them.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from celery import Celery
from celery.result import AsyncResult

from tests.integration.conftest import System, consumer_paused, wait_for
from tests.integration.models import Sleepy, add_model, row_sums
from worker.sklearn_model import SklearnModel

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pidfile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("direct-pids") / "slow.pid"


@pytest.fixture(scope="module", autouse=True)
def slow_model(model_dir: Path, pidfile: Path) -> Iterator[None]:
    """A model that takes 2 s per call and notes each call's pid (for the kill test), and two
    that outlast the session worker's 5 s soft and 7 s hard time limits."""
    names = {
        "direct-slow": Sleepy(2.0, pidfile=str(pidfile)),
        "direct-soft-limit": Sleepy(30.0),
        "direct-hard-limit": Sleepy(30.0, ignore_soft_limit=True),
    }
    for name, estimator in names.items():
        add_model(model_dir, name, estimator)
    yield
    for name in names:
        for path in sorted((model_dir / name).rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        (model_dir / name).rmdir()


@pytest.fixture
def app(system: System) -> Iterator[Celery]:
    client = Celery(broker=system.redis_url, backend=system.redis_url)
    yield client
    client.close()


def sklearn_predictions(model_dir: Path, rows: list[list[float]]) -> list[float]:
    """What scikit-learn's own `predict` says for each row alone."""
    estimator = SklearnModel.load(model_dir / "demo" / "1" / "model.skops", fast=False).estimator
    return [float(estimator.predict(np.asarray([row]))[0]) for row in rows]


def batches(system: System) -> list[dict[str, object]]:
    """The worker's "direct batch done" lines."""
    lines = system.worker_log.read_text(errors="replace").splitlines()
    entries = [json.loads(line) for line in lines if line.startswith("{")]
    return [e for e in entries if e.get("event") == "direct batch done"]


def send(app: Celery, rows: list[list[object]], model: str = "demo") -> AsyncResult:
    return app.send_task("mlqueue.predict", kwargs={"rows": rows, "model": model}, queue="mlqueue")


def test_concurrent_direct_tasks_each_get_the_prediction_of_their_own_row(
    app: Celery,
    system: System,
    http: httpx.Client,
    model_dir: Path,
    diabetes_rows: list[list[float]],
) -> None:
    # Every task a different row (no two alike), sent by four senders at once.
    rows = [[v + 0.001 * i for v in diabetes_rows[i % len(diabetes_rows)]] for i in range(400)]
    results: dict[int, AsyncResult] = {}
    before = len(batches(system))

    def sender(first: int) -> None:
        for i in range(first, len(rows), 4):
            results[i] = send(app, [rows[i]])

    with consumer_paused(system):
        senders = [threading.Thread(target=sender, args=(k,)) for k in range(4)]
        for thread in senders:
            thread.start()
        for thread in senders:
            thread.join(60)
    expected = sklearn_predictions(model_dir, rows)
    for i, result in sorted(results.items()):
        assert result.get(timeout=60) == {
            "predictions": [expected[i]],
            "model": "demo",
            "version": "1",
        }, i
    # Each is its own job, visible through the gateway like any direct task.
    for i in (0, 199, 399):
        view = http.get(f"/v1/jobs/{results[i].id}").json()
        assert view["status"] == "succeeded" and view["kind"] == "task" and view["n_rows"] == 1
        assert http.get(f"/v1/jobs/{results[i].id}/result").json()["data"] == [expected[i]]
    # A batch logs its line just after storing its results: wait for the last one.
    wait_for(lambda: sum(int(str(b["tasks"])) for b in batches(system)[before:]) == len(rows))
    ran = batches(system)[before:]
    assert max(int(str(b["tasks"])) for b in ran) > 1  # they were coalesced
    # And each message was acknowledged (kombu's bookkeeping of unacknowledged ones empties).
    wait_for(lambda: system.redis().hlen("unacked") == 0, timeout=10)


def test_a_bad_task_fails_alone_while_its_batch_mates_succeed(
    app: Celery, system: System, model_dir: Path, diabetes_rows: list[list[float]]
) -> None:
    good_rows = diabetes_rows[:30]
    before = len(batches(system))
    with consumer_paused(system):
        # Good and bad tasks interleaved, so that batches hold both.
        good, bad = [], []
        for row in good_rows:
            good.append(send(app, [row]))
            bad.append(send(app, [[1.0, "x"]]))
        unknown = send(app, [good_rows[0]], model="no-such-model")
        not_a_list = send(app, "rows")  # type: ignore[arg-type]
    expected = sklearn_predictions(model_dir, good_rows)
    assert [r.get(timeout=30)["predictions"] for r in good] == [[y] for y in expected]
    for result in bad:
        with pytest.raises(Exception, match="row 0: expected 10 features, got 2") as info:
            result.get(timeout=30)
        assert type(info.value).__name__ == "InvalidInput"
    with pytest.raises(Exception, match="no-such-model") as unknown_info:
        unknown.get(timeout=30)
    assert type(unknown_info.value).__name__ == "ModelNotFound"
    with pytest.raises(Exception, match="rows must be a non-empty list") as list_info:
        not_a_list.get(timeout=30)
    assert type(list_info.value).__name__ == "InvalidInput"
    total = 2 * len(good_rows) + 2
    wait_for(lambda: sum(int(str(b["tasks"])) for b in batches(system)[before:]) == total)
    ran = batches(system)[before:]
    # Some batch held failing and succeeding tasks at once.
    assert any(0 < int(str(b["failed"])) < int(str(b["tasks"])) for b in ran)


def test_a_worker_killed_mid_batch_loses_no_task(
    app: Celery, system: System, http: httpx.Client, pidfile: Path
) -> None:
    assert system.worker is not None
    pidfile.unlink(missing_ok=True)
    rows = [[float(i + j) for j in range(10)] for i in range(12)]
    with consumer_paused(system):
        sent = [send(app, [row], model="direct-slow") for row in rows]
    wait_for(lambda: pidfile.exists() and pidfile.read_text() != "", timeout=20)
    # Every message delivered (so none is between kombu's pop and its unacked record, a gap of
    # the transport's that only the gateway's outbox covers), some of them mid-prediction.
    wait_for(lambda: system.redis().llen("mlqueue") == 0, timeout=20)
    os.killpg(system.worker.pid, signal.SIGKILL)  # the whole worker, mid-prediction
    system.worker.wait(10)
    killed = time.monotonic()
    system.start_worker()  # the same node name: it hands back what its previous life held
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not all(r.ready() for r in sent):
        time.sleep(0.2)
    missing = [r.id for r in sent if not r.ready()]
    redis = system.redis()
    assert missing == [], (missing, redis.hgetall("unacked"), redis.llen("mlqueue"))
    answers = [r.get(timeout=10)["predictions"] for r in sent]
    assert answers == [[y] for y in row_sums(rows)]
    for result in sent:
        assert http.get(f"/v1/jobs/{result.id}").json()["status"] == "succeeded"
    calls = pidfile.read_text().split()
    assert len(calls) >= 2  # killed while predicting, then predicted again
    print(f"worker SIGKILL mid-batch: all {len(rows)} tasks done {time.monotonic() - killed:.1f} s")


@pytest.mark.parametrize(
    ("model", "task_error", "job_error"),
    [
        ("direct-soft-limit", "SoftTimeLimitExceeded", "TimeLimitExceeded"),
        ("direct-hard-limit", "TimeLimitExceeded", "TimeLimitExceeded"),
    ],
)
def test_a_batch_past_its_time_limit_fails_each_task_and_job(
    app: Celery,
    system: System,
    http: httpx.Client,
    diabetes_rows: list[list[float]],
    model: str,
    task_error: str,
    job_error: str,
) -> None:
    with consumer_paused(system):
        slow = [send(app, [row], model=model) for row in diabetes_rows[:3]]
    for result in slow:
        with pytest.raises(Exception) as info:  # noqa: PT011 - the type is asserted below
            result.get(timeout=30)
        assert type(info.value).__name__ == task_error
        wait_for(lambda r=result: http.get(f"/v1/jobs/{r.id}").json()["status"] == "failed")
        assert http.get(f"/v1/jobs/{result.id}").json()["error"]["type"] == job_error
    # The worker serves on (a hard limit cost it a pool process, replaced).
    fine = send(app, [diabetes_rows[0]])
    assert fine.get(timeout=30)["model"] == "demo"
