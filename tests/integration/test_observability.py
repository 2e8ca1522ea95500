"""Metrics and logs of the real system: worker children summed, queue depth, a job's log lines."""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from celery import Celery
from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from prometheus_client.parser import text_string_to_metric_families

from devrun import processes
from tests.integration.conftest import System, answers, gateway_processes, wait_for

pytestmark = pytest.mark.integration


def total(text: str, name: str, **labels: str) -> float:
    """The sum of every sample called `name` whose labels include `labels`."""
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and labels.items() <= s.labels.items()
    )


def run_jobs(http: httpx.Client, rows: list[list[float]], n: int) -> list[str]:
    """Submit `n` jobs at once and wait for each to succeed; returns their ids."""

    def one(_: int) -> str:
        job_id = str(http.post("/v1/jobs", json={"data": rows}).json()["job_id"])
        result = http.get(f"/v1/jobs/{job_id}/result", params={"wait": 20})
        assert result.status_code == 200, result.text
        return job_id

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, range(n)))


def test_worker_metrics_sum_every_child(
    http: httpx.Client, system: System, diabetes_rows: list[list[float]], tmp_path: Path
) -> None:
    before = httpx.get(system.worker_metrics_url, timeout=5).text
    n = 12
    run_jobs(http, diabetes_rows[:7], n)
    after = httpx.get(system.worker_metrics_url, timeout=5).text

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    ok = {"model": "demo", "version": "1", "outcome": "succeeded"}
    assert delta("mlqueue_worker_jobs_total", **ok) >= n
    assert delta("mlqueue_worker_rows_total", **ok) >= 7 * n
    # Micro-batching may serve several jobs with one model call.
    assert 1 <= delta("mlqueue_worker_predict_duration_seconds_count", model="demo") <= n
    assert delta("mlqueue_worker_batch_rows_sum", model="demo") >= 7 * n
    assert total(after, "mlqueue_worker_model_load_seconds_count", model="demo") >= 1
    # Each child wrote its own files; the main process's endpoint is their sum.
    per_child = per_process(Path(system.env["MLQUEUE_METRICS_DIR"]), tmp_path)
    jobs = [total(text, "mlqueue_worker_jobs_total", **ok) for text in per_child.values()]
    assert sum(jobs) == total(after, "mlqueue_worker_jobs_total", **ok)


def per_process(metrics_dir: Path, scratch: Path) -> dict[str, str]:
    """The exposition of each process's own files in a multiprocess directory."""
    found: dict[str, str] = {}
    for pid in {p.stem.rsplit("_", 1)[1] for p in metrics_dir.glob("*.db")}:
        alone = scratch / pid
        alone.mkdir()
        for path in metrics_dir.glob(f"*_{pid}.db"):
            shutil.copy(path, alone / path.name)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(alone))
        found[pid] = generate_latest(registry).decode()
    return found


def test_gateway_metrics_show_queue_depth_submits_and_latency(
    http: httpx.Client, diabetes_rows: list[list[float]]
) -> None:
    before = http.get("/metrics").text
    n = 5
    run_jobs(http, diabetes_rows[:3], n)
    after = http.get("/metrics")
    assert after.status_code == 200
    text = after.text

    def delta(name: str, **labels: str) -> float:
        return total(text, name, **labels) - total(before, name, **labels)

    assert delta("mlqueue_jobs_submitted_total", model="demo", kind="json") == n
    assert delta("mlqueue_rows_submitted_total", model="demo", kind="json") == 3 * n
    post = {"method": "POST", "route": "/v1/jobs"}
    assert delta("mlqueue_http_requests_total", **post, status="202") == n
    assert delta("mlqueue_http_request_duration_seconds_count", **post) == n
    assert delta("mlqueue_http_request_duration_seconds_sum", **post) > 0
    assert 'mlqueue_queue_depth{queue="mlqueue"}' in text
    assert total(text, "mlqueue_redis_up") == 1


MARK = "0.123456789"


def lines_of(log: Path, job_id: str) -> list[dict[str, Any]]:
    """Every line of `log` that mentions `job_id`, each of which must be a JSON object."""
    return [json.loads(line) for line in log.read_text().splitlines() if job_id in line]


def test_a_jobs_log_lines_carry_its_id_and_no_row_data(
    http: httpx.Client, system: System, diabetes_rows: list[list[float]]
) -> None:
    rows = [[float(MARK), *row[1:]] for row in diabetes_rows[:5]]
    job_id = str(http.post("/v1/jobs", json={"data": rows}).json()["job_id"])
    result = http.get(f"/v1/jobs/{job_id}/result", params={"wait": 20})
    assert result.status_code == 200
    predictions = result.json()["data"]
    app = Celery(broker=system.redis_url, backend=system.redis_url)
    bad = app.send_task(
        "mlqueue.predict", kwargs={"rows": [[float(MARK)] * 9 + ["x"]]}, queue="mlqueue"
    )
    with pytest.raises(Exception, match="column 9: expected a number, got str"):
        bad.get(timeout=20)
    app.close()
    gateway_log = system.workdir / "gateway.log"
    wait_for(
        lambda: any(e.get("event") == "job failed" for e in lines_of(system.worker_log, bad.id))
    )

    for log in (gateway_log, system.worker_log):
        text = log.read_text()
        assert MARK not in text
        # Single values may match a timing by chance (a forest predicts 2-decimal means); a
        # logged result would show neighbouring predictions together.
        pairs = list(itertools.pairwise(predictions))
        assert not any(f"{a!r}{sep}{b!r}" in text for a, b in pairs for sep in (",", ", "))
    gateway = lines_of(gateway_log, job_id)
    [submitted] = [e for e in gateway if e["event"] == "job submitted"]
    assert submitted == submitted | {"job_id": job_id, "model": "demo", "version": "1", "rows": 5}
    assert {e.get("path") for e in gateway} >= {f"/v1/jobs/{job_id}/result?wait=20"}
    # The micro-batch message that carried the job: its id is the worker's Celery task id.
    [sent] = [e for e in gateway if e["event"] == "batch sent"]
    assert job_id in sent["job_ids"]
    worker = {e["event"]: e for e in lines_of(system.worker_log, job_id)}
    assert worker["job started"]["job_id"] == job_id
    done = worker["job succeeded"]
    assert done == done | {"job_id": job_id, "model": "demo", "version": "1", "rows": 5}
    assert float(str(done["duration_ms"])) > 0
    failed = next(e for e in lines_of(system.worker_log, bad.id) if e["event"] == "job failed")
    assert failed == failed | {"job_id": bad.id, "error_type": "InvalidInput", "rows": 1}


def test_readyz_says_no_worker_while_none_runs(http: httpx.Client, system: System) -> None:
    assert system.worker is not None
    processes.stop(system.worker)
    try:
        wait_for(lambda: http.get("/readyz").status_code == 503, timeout=15)
        body = http.get("/readyz").json()
        assert body["reasons"] == ["no worker has sent a heartbeat recently"]
        assert body["checks"]["redis"] == "ok" and body["checks"]["model"] == "demo:1"
    finally:
        system.start_worker()
    wait_for(lambda: http.get("/readyz").status_code == 200, timeout=15)


def test_flower_sees_the_workers(system: System) -> None:
    port = processes.free_port()
    argv = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "flower"]
    argv += [f"--port={port}", "--address=127.0.0.1", "--basic-auth=ops:secret"]
    flower = processes.spawn(argv, system.env, log=system.workdir / "flower.log")
    url = f"http://127.0.0.1:{port}"
    try:
        processes.wait_until(lambda: answers(f"{url}/healthcheck"), 30, "flower", flower)
        assert httpx.get(f"{url}/api/workers", timeout=5).status_code == 401
        workers: dict[str, dict[str, object]] = {}
        deadline = time.monotonic() + 20
        while not workers and time.monotonic() < deadline:
            answer = httpx.get(f"{url}/api/workers?refresh=1", auth=("ops", "secret"), timeout=10)
            workers = answer.json()
        [info] = [v for k, v in workers.items() if k.startswith("w1@")]
        assert {"mlqueue.predict", "mlqueue.predict_batch"} <= set(info["registered"])
    finally:
        processes.stop(flower)


def test_several_gateway_processes_answer_metrics_with_their_sum(system: System) -> None:
    with gateway_processes(system, 2) as (url, _):
        # Four keep-alive connections: no process may hold two more than the other, so both
        # answer some of the requests.
        clients = [httpx.Client(base_url=url, timeout=5) for _ in range(4)]
        n = 40
        for i in range(n):
            assert clients[i % 4].get("/v1/models").status_code == 200
        for client in clients:
            client.close()
        models = {"method": "GET", "route": "/v1/models", "status": "200"}
        for _ in range(6):  # whichever process answers, it reports both processes' requests
            text = httpx.get(f"{url}/metrics", timeout=5).text
            assert total(text, "mlqueue_http_requests_total", **models) == n
            assert total(text, "mlqueue_redis_up") == 1
            assert 'mlqueue_queue_depth{queue="mlqueue"}' in text
