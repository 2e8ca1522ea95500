"""Traces across the queue, on the real system: uvicorn, a Celery worker and Redis export spans to
a local OTLP/HTTP receiver that this module runs on 127.0.0.1 (decoding the protobuf requests).

Each kind of job must produce its spans with the right parent and link relations across the
process boundary, and its log lines must carry its trace id.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from celery import Celery
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from shared import tracing
from shared.registry import Registry
from tests.integration.conftest import System, running_system
from worker.sklearn_model import SklearnModel
from worker.train import train_demo

pytestmark = pytest.mark.integration
FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    links: tuple[tuple[str, str], ...]
    attributes: dict[str, Any]
    start: int
    end: int

    @property
    def ms(self) -> float:
        return (self.end - self.start) / 1e6


@dataclass
class Receiver:
    """An OTLP/HTTP traces endpoint: every span it received, decoded."""

    spans: list[Span] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            attrs = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                decoded = [_span(str(attrs.get("service.name")), s) for s in scope_spans.spans]
                with self.lock:
                    self.spans.extend(decoded)

    def until(self, found: Callable[[list[Span]], bool], timeout: float = 20.0) -> list[Span]:
        """The spans so far, once `found(spans)` holds (fails after `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                spans = list(self.spans)
            if found(spans):
                return spans
            assert time.monotonic() < deadline, f"spans not exported in time: {_names(spans)}"
            time.sleep(0.1)


def _attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in pairs}


def _span(service: str, s: Any) -> Span:
    return Span(
        service,
        s.name,
        s.trace_id.hex(),
        s.span_id.hex(),
        s.parent_span_id.hex(),
        tuple((link.trace_id.hex(), link.span_id.hex()) for link in s.links),
        _attributes(s.attributes),
        s.start_time_unix_nano,
        s.end_time_unix_nano,
    )


def _names(spans: list[Span]) -> list[str]:
    return sorted({f"{s.service}:{s.name}" for s in spans})


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[Receiver, int]]:
    received = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            received.add(body)
            reply = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield received, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo model (loaded when a worker process starts) and `second` (loaded on first use,
    inside a job's trace)."""
    root = tmp_path_factory.mktemp("traced-models")
    registry = Registry(root, "demo")
    train_demo(registry, "demo")
    train_demo(registry, "second")
    return root


@pytest.fixture(scope="module")
def traced(
    tmp_path_factory: pytest.TempPathFactory, models: Path, receiver: tuple[Receiver, int]
) -> Iterator[tuple[System, Receiver]]:
    received, port = receiver
    environ = {
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{port}/v1/traces",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # export within 0.1 s, not the default 5 s
    }
    with running_system(
        tmp_path_factory.mktemp("traced-system"),
        models,
        db_offset=7,  # apart from the other systems on a shared Redis (CI)
        environ=environ,
        csv_chunk_rows="100",
        # A batch in flight holds the next one this long for company: concurrent jobs share.
        batch_max_wait_ms="300",
    ) as system:
        yield system, received


@pytest.fixture
def http(traced: tuple[System, Receiver]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=traced[0].base_url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def estimator(models: Path) -> Any:
    return SklearnModel.load(models / "demo" / "1" / "model.skops", fast=False).estimator


def one(spans: list[Span], name: str, **attributes: Any) -> Span:
    found = [s for s in spans if s.name == name and _has(s, attributes)]
    assert len(found) == 1, f"{len(found)} spans {name} {attributes}: {_names(spans)}"
    return found[0]


def _has(span: Span, attributes: dict[str, Any]) -> bool:
    return all(span.attributes.get(k) == v for k, v in attributes.items())


def child(spans: list[Span], parent: Span, name: str, **attributes: Any) -> Span:
    """The one span `name` whose parent is `parent` (same trace)."""
    found = one([s for s in spans if s.parent_id == parent.span_id], name, **attributes)
    assert found.trace_id == parent.trace_id
    return found


def assert_no_feature_values(spans: list[Span], rows: list[list[float]]) -> None:
    """No attribute of any span (Redis commands included) holds a feature value."""
    texts = [str(v) for s in spans for v in s.attributes.values()]
    features = {repr(v) for r in rows for v in r}
    assert not [t for t in texts if any(f in t for f in features)]


def log_lines(path: Path, job_id: str) -> list[dict[str, Any]]:
    lines = []
    for text in path.read_text().splitlines():
        if job_id in text and text.startswith("{"):
            line = json.loads(text)
            if line.get("job_id") == job_id:
                lines.append(line)
    return lines


def test_a_json_job_is_one_trace_from_request_to_prediction(
    traced: tuple[System, Receiver],
    http: httpx.Client,
    models: Path,
    diabetes_rows: list[list[float]],
) -> None:
    system, received = traced
    row = diabetes_rows[3]
    submitted = http.post("/v1/jobs", json={"data": [row], "model": "second"})
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["job_id"]
    answer = http.get(f"/v1/jobs/{job_id}/result", params={"wait": 20})
    assert answer.status_code == 200, answer.text
    second = SklearnModel.load(models / "second" / "1" / "model.skops", fast=False).estimator
    assert answer.json()["data"] == second.predict(np.asarray([row])).tolist()
    job = {tracing.JOB_ID: job_id}

    def complete(s: list[Span]) -> bool:
        # The submit may have run in the other gateway process, which exports on its own, and
        # each process exports in batches: wait for every span of this job's trace the test
        # reads, not for any span of the right name (an earlier test's would do).
        submits = [x for x in s if x.name == "mlqueue.submit" and _has(x, job)]
        if not submits:
            return False
        names = {x.name for x in s if x.trace_id == submits[0].trace_id}
        wanted = {"POST /v1/jobs", "mlqueue.batch", "apply_async/mlqueue.predict_batch",
                  "run/mlqueue.predict_batch", "mlqueue.predict", "mlqueue.store",
                  "mlqueue.queue_wait"}  # fmt: skip
        return wanted <= names and any(x.name == "mlqueue.wait" and _has(x, job) for x in s)

    spans = received.until(complete)
    submit = one(spans, "mlqueue.submit", **job)
    assert submit.service == tracing.GATEWAY
    assert submit.attributes[tracing.MODEL] == "second"
    assert submit.attributes[tracing.ROWS] == 1
    request = next(s for s in spans if s.span_id == submit.parent_id)
    assert request.name == "POST /v1/jobs"
    # A lone job's batch is its child, and links it.
    batch = child(spans, submit, "mlqueue.batch")
    assert batch.links == ((submit.trace_id, submit.span_id),)
    publish = child(spans, batch, "apply_async/mlqueue.predict_batch")
    run = child(spans, publish, "run/mlqueue.predict_batch")  # across the broker
    assert run.service == tracing.WORKER
    load = child(spans, run, "mlqueue.model_load", **{tracing.MODEL: "second"})
    predict = child(spans, run, "mlqueue.predict", **{tracing.MODEL: "second"})
    assert predict.attributes[tracing.VERSION] == "1"
    assert predict.attributes[tracing.ROWS] == 1
    assert load.end <= predict.start
    child(spans, run, "mlqueue.store")
    wait = child(spans, submit, "mlqueue.queue_wait", **job)
    assert wait.links == ((run.trace_id, run.span_id),)
    assert wait.start >= submit.start and wait.end <= run.end
    long_poll = one(spans, "mlqueue.wait", **job)
    assert long_poll.trace_id != submit.trace_id  # the GET is a request of its own
    # Redis commands are spans too (the official instrumentation), under the worker's task.
    assert any(s.parent_id == run.span_id and s.service == tracing.WORKER
               and s.name not in ("mlqueue.predict", "mlqueue.store", "mlqueue.model_load")
               for s in spans)  # fmt: skip
    assert_no_feature_values(spans, [row])
    print("\none-row job:\n" + render(spans, submit.trace_id))
    # Both sides' lines about the job carry its trace id.
    gateway_lines = log_lines(system.workdir / "gateway.log", job_id)
    worker_lines = log_lines(system.worker_log, job_id)
    assert {"job submitted"} <= {line["event"] for line in gateway_lines if "trace_id" in line}
    assert {"job succeeded"} <= {line["event"] for line in worker_lines if "trace_id" in line}
    for line in gateway_lines + worker_lines:
        if "trace_id" in line and line["event"] != "job started":
            assert line["trace_id"] == submit.trace_id, line


def render(spans: list[Span], trace_id: str) -> str:
    """One trace as an indented tree with durations (printed: `pytest -s` shows samples)."""
    inside = sorted((s for s in spans if s.trace_id == trace_id), key=lambda s: s.start)
    ids = {s.span_id for s in inside}
    lines: list[str] = []

    def walk(parent: str, depth: int) -> None:
        for s in inside:
            if s.parent_id == parent or (depth == 0 and s.parent_id not in ids and not parent):
                lines.append(f"{'  ' * depth}{s.name} [{s.service}] {s.ms:.2f} ms")
                walk(s.span_id, depth + 1)

    walk("", 0)
    return "\n".join(lines)


def test_concurrent_jobs_share_batch_messages_that_link_each_job(
    traced: tuple[System, Receiver], estimator: Any, diabetes_rows: list[list[float]]
) -> None:
    system, received = traced
    jobs = [[diabetes_rows[i], diabetes_rows[i + 1]] for i in range(0, 32, 2)]

    async def run_one(client: httpx.AsyncClient, rows: list[list[float]]) -> tuple[str, Any]:
        submitted = await client.post("/v1/jobs", json={"data": rows})
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["job_id"]
        answer = await client.get(f"/v1/jobs/{job_id}/result", params={"wait": 20})
        assert answer.status_code == 200, answer.text
        return job_id, answer.json()["data"]

    async def run_all() -> list[tuple[str, Any]]:
        async with httpx.AsyncClient(base_url=system.base_url, timeout=60) as client:
            return await asyncio.gather(*(run_one(client, rows) for rows in jobs))

    results = asyncio.run(run_all())
    for rows, (_, predictions) in zip(jobs, results, strict=True):
        assert predictions == estimator.predict(np.asarray(rows)).tolist()
    job_ids = [job_id for job_id, _ in results]
    # Gateway and worker processes export on their own schedules: wait for both sides' spans.
    spans = received.until(
        lambda s: all(
            {x.attributes.get(tracing.JOB_ID) for x in s if x.name == name} >= set(job_ids)
            for name in ("mlqueue.queue_wait", "mlqueue.submit")
        )
    )
    submits = {
        job_id: one(spans, "mlqueue.submit", **{tracing.JOB_ID: job_id}) for job_id in job_ids
    }
    by_submit = {(s.trace_id, s.span_id): job_id for job_id, s in submits.items()}
    batches = [s for s in spans if s.name == "mlqueue.batch" and set(s.links) & set(by_submit)]
    # Every job's submit span is linked by exactly one batch span.
    linked = [by_submit[link] for b in batches for link in b.links]
    assert sorted(linked) == sorted(job_ids)
    shared = [b for b in batches if len(b.links) > 1]
    assert shared, "no batch message carried several jobs"
    for batch in batches:
        assert batch.attributes[tracing.JOBS] == len(batch.links)
        if len(batch.links) > 1:
            assert batch.parent_id == ""  # many traces meet here: a trace of its own
        else:
            assert (batch.trace_id, batch.parent_id) == batch.links[0]
        publish = child(spans, batch, "apply_async/mlqueue.predict_batch")
        run = child(spans, publish, "run/mlqueue.predict_batch")
        predict = child(spans, run, "mlqueue.predict")
        assert predict.attributes[tracing.ROWS] == 2 * len(batch.links)
        assert predict.attributes[tracing.JOBS] == len(batch.links)
        # Each job's queue wait sits in the job's own trace and links the batch's task.
        for trace_id, span_id in batch.links:
            job_id = by_submit[(trace_id, span_id)]
            wait = child(spans, submits[job_id], "mlqueue.queue_wait", **{tracing.JOB_ID: job_id})
            assert wait.links == ((run.trace_id, run.span_id),)
    # A job that shared a message: its worker lines are in its own trace, not the batch's.
    job_id = by_submit[shared[0].links[0]]
    worker_lines = [line for line in log_lines(system.worker_log, job_id) if "trace_id" in line]
    assert {line["event"] for line in worker_lines} >= {"job started", "job succeeded"}
    assert {line["trace_id"] for line in worker_lines} == {submits[job_id].trace_id}
    assert_no_feature_values(spans, jobs)
    print("\nshared batch:\n" + render(spans, shared[0].trace_id))


def test_a_csv_job_traces_each_chunk_across_the_queue(
    traced: tuple[System, Receiver], http: httpx.Client, estimator: Any,
    diabetes_rows: list[list[float]],
) -> None:  # fmt: skip
    system, received = traced
    rows = diabetes_rows[:250]  # 3 chunks of at most 100 lines
    lines = [",".join(FEATURES)] + [",".join(map(repr, r)) for r in rows]
    data = ("\n".join(lines) + "\n").encode()
    response = http.post("/v1/jobs/csv", files={"file": ("in.csv", data, "text/csv")})
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    answer = http.get(f"/v1/jobs/{job_id}/result", params={"wait": 30})
    assert answer.status_code == 200, answer.text
    scored = [float(line.split(",")[-1]) for line in answer.text.splitlines()[1:]]
    assert scored == pytest.approx(estimator.predict(np.asarray(rows)).tolist(), rel=1e-12)
    job = {tracing.JOB_ID: job_id}
    spans = received.until(
        lambda s: (
            len([x for x in s if x.name == "mlqueue.queue_wait" and _has(x, job)]) == 3
            and len([x for x in s if x.name == "mlqueue.store" and _has(x, job)]) == 3
            and any(x.name == "mlqueue.submit" and _has(x, job) for x in s)
        )
    )
    submit = one(spans, "mlqueue.submit", **job)
    assert submit.attributes[tracing.JOB_KIND] == "csv"
    assert submit.attributes[tracing.MODEL] == "demo"
    publishes = [s for s in spans if s.parent_id == submit.span_id
                 and s.name == "apply_async/mlqueue.score_chunk"]  # fmt: skip
    assert len(publishes) == 3
    chunk_rows = []
    for publish in publishes:
        run = child(spans, publish, "run/mlqueue.score_chunk")
        assert run.service == tracing.WORKER
        predict = child(spans, run, "mlqueue.predict")
        chunk_rows.append(predict.attributes[tracing.ROWS])
        store = child(spans, run, "mlqueue.store", **job)
        assert store.attributes[tracing.CHUNK] == predict.attributes[tracing.CHUNK]
        wait = child(
            spans,
            submit,
            "mlqueue.queue_wait",
            **{**job, tracing.CHUNK: store.attributes[tracing.CHUNK]},
        )
        assert wait.links == ((run.trace_id, run.span_id),)
    assert sorted(chunk_rows) == [50, 100, 100]
    gateway_lines = [
        x for x in log_lines(system.workdir / "gateway.log", job_id) if "trace_id" in x
    ]
    worker_lines = [x for x in log_lines(system.worker_log, job_id) if "trace_id" in x]
    assert "csv upload accepted" in {x["event"] for x in gateway_lines}
    assert {"chunk scored", "job succeeded"} <= {x["event"] for x in worker_lines}
    assert {x["trace_id"] for x in gateway_lines + worker_lines} == {submit.trace_id}
    assert_no_feature_values(spans, rows)
    print("\ncsv job:\n" + render(spans, submit.trace_id))


def test_a_directly_enqueued_task_continues_the_callers_trace(
    traced: tuple[System, Receiver], estimator: Any, diabetes_rows: list[list[float]]
) -> None:
    system, received = traced
    trace_id, span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    app = Celery(broker=system.redis_url, backend=system.redis_url)
    try:
        sent = app.send_task(
            "mlqueue.predict",
            kwargs={"rows": diabetes_rows[:3]},
            queue="mlqueue",
            # What another service's Celery instrumentation puts in the message headers.
            headers={"traceparent": f"00-{trace_id}-{span_id}-01"},
        )
        result = sent.get(timeout=30)
    finally:
        app.close()
    assert result["predictions"] == estimator.predict(np.asarray(diabetes_rows[:3])).tolist()
    job = {tracing.JOB_ID: sent.id}
    spans = received.until(lambda s: any(x.name == "mlqueue.store" and _has(x, job) for x in s))
    run = one([s for s in spans if s.trace_id == trace_id], "run/mlqueue.predict")
    assert (run.trace_id, run.parent_id, run.service) == (trace_id, span_id, tracing.WORKER)
    predict = child(spans, run, "mlqueue.predict", **job)
    assert (predict.attributes[tracing.ROWS], predict.attributes[tracing.MODEL]) == (3, "demo")
    child(spans, run, "mlqueue.store", **job)
    worker_lines = [x for x in log_lines(system.worker_log, sent.id) if "trace_id" in x]
    assert "job succeeded" in {x["event"] for x in worker_lines}
    assert {x["trace_id"] for x in worker_lines} == {trace_id}
    print("\ndirect task:\n" + render(spans, trace_id))
