"""Prometheus metrics: the gateway's `/metrics`, and the worker's multiprocess counters."""

from __future__ import annotations

import math
import os
from pathlib import Path
from types import SimpleNamespace

import fakeredis
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from prometheus_client import values as prometheus_values
from prometheus_client.parser import text_string_to_metric_families

from shared.errors import InvalidInput
from shared.settings import Settings
from shared.tasks import PREDICT, QUEUE, QUEUE_HIGH, QUEUE_LOW, SCORE_CHUNK, WEBHOOK_QUEUE
from worker import job_events, metrics

ROW = [0.01 * i for i in range(10)]


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, keyed by name and label set."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, frozenset(labels.items())), 0.0)


def scrape(client: TestClient) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return response.text


def test_requests_are_counted_by_route_template_and_status(client: TestClient) -> None:
    before = scrape(client)
    job_id = client.post("/v1/jobs", json={"data": [ROW, ROW]}).json()["job_id"]
    assert client.get(f"/v1/jobs/{job_id}").status_code == 200
    assert client.get("/v1/jobs/no-such-job").status_code == 404
    assert client.get("/no/such/path").status_code == 404
    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    route = "/v1/jobs/{job_id}"
    total = "mlqueue_http_requests_total"
    assert delta(total, method="POST", route="/v1/jobs", status="202") == 1
    assert delta(total, method="GET", route=route, status="200") == 1
    assert delta(total, method="GET", route=route, status="404") == 1
    assert delta(total, method="GET", route="<unmatched>", status="404") == 1
    # No raw path (with its job id) ever becomes a label value.
    assert job_id not in after
    count = "mlqueue_http_request_duration_seconds_count"
    assert delta(count, method="GET", route=route) == 2
    assert delta("mlqueue_jobs_submitted_total", model="demo", kind="json") == 1
    assert delta("mlqueue_rows_submitted_total", model="demo", kind="json") == 2


def test_queue_depth_is_read_from_redis_at_scrape_time(
    client: TestClient, server: fakeredis.FakeServer
) -> None:
    redis = fakeredis.FakeRedis(server=server)
    redis.rpush(QUEUE, "a", "b", "c")
    redis.hset("unacked", mapping={"t1": "m1"})
    text = scrape(client)
    assert value(text, "mlqueue_queue_depth", queue=QUEUE) == 3
    assert value(text, "mlqueue_queue_unacked") == 1
    assert value(text, "mlqueue_redis_up") == 1
    redis.lpop(QUEUE)
    assert value(scrape(client), "mlqueue_queue_depth", queue=QUEUE) == 2
    # Every priority has its own series (and the webhook deliveries theirs).
    redis.rpush(QUEUE_HIGH, "h")
    redis.rpush(WEBHOOK_QUEUE, "w1", "w2")
    text = scrape(client)
    assert value(text, "mlqueue_queue_depth", queue=QUEUE_HIGH) == 1
    assert value(text, "mlqueue_queue_depth", queue=QUEUE_LOW) == 0
    assert value(text, "mlqueue_queue_depth", queue=WEBHOOK_QUEUE) == 2
    redis.delete(QUEUE, QUEUE_HIGH, WEBHOOK_QUEUE)


def test_redis_down_drops_the_depth_and_says_so(
    client: TestClient, server: fakeredis.FakeServer
) -> None:
    server.connected = False
    text = scrape(client)
    assert value(text, "mlqueue_redis_up") == 0
    assert math.isnan(value(text, "mlqueue_queue_depth", queue=QUEUE))


@pytest.fixture
def worker_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The worker's multiprocess metrics set up in `tmp_path`, undone afterwards."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")  # restored by monkeypatch
    monkeypatch.setattr(prometheus_values, "ValueClass", prometheus_values.ValueClass)
    monkeypatch.setattr(metrics, "_metrics", None)
    path = tmp_path / "metrics"
    path.mkdir()
    (path / "counter_1.db").write_bytes(b"stale")  # a previous run's file is removed
    assert metrics.setup(Settings(metrics_dir=path)) == path
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(path)
    assert not (path / "counter_1.db").exists()
    return path


def collect(path: Path) -> str:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(path))
    return generate_latest(registry).decode()


def test_worker_metrics_are_written_for_the_main_process_to_sum(worker_metrics: Path) -> None:
    metrics.observe_job("demo", "1", "succeeded", 5, 0.02)
    metrics.observe_job("demo", "1", "succeeded", 3, 0.01)
    metrics.observe_job("demo", "1", "failed", 2, 0.01, error_type="PredictionFailed")
    metrics.observe_predict("demo", "1", 5, 0.004)
    metrics.observe_model_load("demo", "1", 0.3)
    text = collect(worker_metrics)
    by_outcome = {"model": "demo", "version": "1"}
    assert value(text, "mlqueue_worker_jobs_total", **by_outcome, outcome="succeeded") == 2
    assert value(text, "mlqueue_worker_rows_total", **by_outcome, outcome="succeeded") == 8
    assert value(text, "mlqueue_worker_jobs_total", **by_outcome, outcome="failed") == 1
    failures = "mlqueue_worker_failures_total"
    assert value(text, failures, model="demo", error_type="PredictionFailed") == 1
    assert value(text, "mlqueue_worker_batch_rows_sum", model="demo") == 5
    assert value(text, "mlqueue_worker_batch_rows_bucket", model="demo", le="10.0") == 1
    assert value(text, "mlqueue_worker_batch_rows_bucket", model="demo", le="1.0") == 0
    assert value(text, "mlqueue_worker_predict_duration_seconds_count", **by_outcome) == 1
    assert value(text, "mlqueue_worker_model_load_seconds_sum", **by_outcome) == 0.3


def test_task_signals_count_jobs_by_their_outcome(worker_metrics: Path) -> None:
    task = SimpleNamespace(name=PREDICT)
    kwargs = {"rows": [ROW] * 4, "model": "demo:1"}
    done = {"predictions": [1.0] * 4, "model": "demo", "version": "1"}
    for task_id, state, retval in [
        ("a", "SUCCESS", done),
        ("b", "FAILURE", InvalidInput("row 0: column 3: expected a number")),
        ("c", "FAILURE", RuntimeError("boom")),
    ]:
        job_events._task_started(task_id, task, kwargs)
        job_events._task_ended(task_id, task, kwargs, retval, state)
    text = collect(worker_metrics)
    jobs = "mlqueue_worker_jobs_total"
    assert value(text, jobs, model="demo", version="1", outcome="succeeded") == 1
    assert (
        value(text, "mlqueue_worker_rows_total", model="demo", version="1", outcome="succeeded")
        == 4
    )
    # A rejected message's model name is the sender's text: it never becomes a label.
    assert value(text, jobs, model="unknown", version="", outcome="failed") == 1
    failures = "mlqueue_worker_failures_total"
    assert value(text, failures, model="unknown", error_type="InvalidInput") == 1
    assert value(text, failures, model="demo", error_type="RuntimeError") == 1
    assert not job_events._started


def test_worker_observers_are_no_ops_before_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "_metrics", None)
    metrics.observe_job("demo", "1", "succeeded", 1, 0.1)  # must not raise
    assert metrics.serve(Settings()) is None


def test_csv_chunks_count_rows_and_the_last_chunk_ends_the_job(worker_metrics: Path) -> None:
    task = SimpleNamespace(name=SCORE_CHUNK)
    for job_id, index, rows, state, retval in [
        ("j1", 0, 100, "SUCCESS", "running"),
        ("j1", 1, 50, "SUCCESS", "succeeded"),
        ("j1", 1, 50, "SUCCESS", "succeeded_already"),  # a redelivery, skipped
        ("j2", 0, 100, "SUCCESS", "failed"),  # a bad line
        ("j3", 0, 100, "FAILURE", RuntimeError("boom")),
    ]:
        kwargs = {"job_id": job_id, "index": index, "rows": rows, "model": "demo:1"}
        job_events._task_started(f"{job_id}.{index}", task, kwargs)
        job_events._task_ended(f"{job_id}.{index}", task, kwargs, retval, state)
    text = collect(worker_metrics)
    ok = {"model": "demo", "version": "1", "outcome": "succeeded"}
    failed = {**ok, "outcome": "failed"}
    assert value(text, "mlqueue_worker_rows_total", **ok) == 150
    assert value(text, "mlqueue_worker_jobs_total", **ok) == 1
    assert value(text, "mlqueue_worker_rows_total", **failed) == 200
    assert value(text, "mlqueue_worker_jobs_total", **failed) == 2
    failures = "mlqueue_worker_failures_total"
    assert value(text, failures, model="demo", error_type="InvalidInput") == 1
    assert value(text, failures, model="demo", error_type="RuntimeError") == 1


def test_unknown_http_methods_are_labelled_other(client: TestClient) -> None:
    for i in range(20):
        client.request(f"MADEUP{i}", "/v1/jobs")
    metrics = client.get("/metrics").text
    assert 'method="other",route="/v1/jobs",status="405"' in metrics
    assert "MADEUP" not in metrics
