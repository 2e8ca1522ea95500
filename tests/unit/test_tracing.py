"""Tracing: the switch, the propagation helpers, the batch span's links and log correlation,
against OpenTelemetry's in-memory exporter (the live system's traces: tests/integration)."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import fakeredis
import orjson
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway import traces
from gateway.batcher import Batcher
from gateway.store import JobStore
from shared import jobstore, tracing
from shared.logs import JsonFormatter
from shared.tasks import BatchJob

ROW = [0.5] * 10


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    """Tracing on, into memory, for the test only."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable(provider)
    try:
        yield exporter
    finally:
        tracing.disable()


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def test_tracing_is_off_unless_an_otlp_endpoint_is_configured() -> None:
    assert not tracing.ON
    assert not tracing.configured({})
    assert not tracing.configured({"OTEL_SERVICE_NAME": "x", "OTEL_EXPORTER_OTLP_ENDPOINT": " "})
    assert tracing.configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert tracing.configured({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1"})
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    assert not tracing.configured({**endpoint, "OTEL_SDK_DISABLED": "true"})
    assert not tracing.configured({**endpoint, "OTEL_TRACES_EXPORTER": "none"})
    assert not tracing.setup(tracing.GATEWAY, {})
    assert not tracing.ON


def test_when_off_the_hooks_never_call_into_opentelemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("called into OpenTelemetry while tracing is off")

    for name in ("tracer", "carrier", "extract", "span_context", "log_ids", "_span"):
        monkeypatch.setattr(tracing, name, refuse)
    with tracing.span("mlqueue.submit", {tracing.JOB_ID: "j"}) as span:
        assert span is None
    with traces.batch_span([{"id": "j", "rows": [ROW]}], "demo:1", 1) as span:
        assert span is None
    line = orjson.loads(JsonFormatter().format(_record(job_id="j")))
    assert "trace_id" not in line
    redis = fakeredis.FakeAsyncRedis()
    sent: list[Any] = []

    async def publish(message_id: str, kwargs: Any, queue: str) -> None:
        sent.append(kwargs)

    batcher = Batcher(JobStore(redis, 60), publish, max_rows=100, max_wait=0.001)
    asyncio.run(batcher.add(jobstore.new_record("j", kind="json", model="demo", n_rows=1),
                            [ROW], "demo:1"))  # fmt: skip
    assert sent[0]["jobs"] == [{"id": "j", "rows": [ROW]}]  # no `trace` key in the message


def test_a_carrier_holds_the_current_span_and_when_it_was_queued(
    exported: InMemorySpanExporter,
) -> None:
    before = time.time()
    with tracing.span("mlqueue.submit") as span:
        assert span is not None
        carrier = tracing.carrier()
    assert set(carrier) == {"traceparent", tracing.ENQUEUED}
    assert before <= float(carrier[tracing.ENQUEUED]) <= time.time()
    remote = tracing.span_context(carrier)
    assert remote is not None and remote.is_remote
    assert (remote.trace_id, remote.span_id) == (
        span.get_span_context().trace_id,
        span.get_span_context().span_id,
    )
    with tracing.span("mlqueue.continued", carrier=carrier):
        pass
    (continued,) = named(exported, "mlqueue.continued")
    assert continued.parent is not None
    assert continued.parent.span_id == span.get_span_context().span_id
    assert continued.context.trace_id == span.get_span_context().trace_id


def test_garbage_carriers_name_no_span(exported: InMemorySpanExporter) -> None:
    for carrier in ({}, {"traceparent": "junk"}, {"traceparent": 7}, ["traceparent"]):
        assert tracing.span_context(carrier) is None  # type: ignore[arg-type]
        assert tracing.record_queue_wait(carrier, {}) is None  # type: ignore[arg-type]
    assert exported.get_finished_spans() == ()


def submitted(job_id: str) -> tuple[BatchJob, int]:
    """A job as the batcher holds it: its carrier taken inside its submit span."""
    with tracing.span("mlqueue.submit", {tracing.JOB_ID: job_id}) as span:
        assert span is not None
        return {"id": job_id, "rows": [ROW], "trace": tracing.carrier()}, span.get_span_context(
        ).span_id  # fmt: skip


def test_a_batch_span_links_every_job_and_starts_its_own_trace(
    exported: InMemorySpanExporter,
) -> None:
    jobs, span_ids = zip(*(submitted(f"j{i}") for i in range(3)), strict=True)
    with traces.batch_span(list(jobs), "demo:1", 3):
        pass
    (batch,) = named(exported, "mlqueue.batch")
    assert batch.parent is None  # many traces meet here: none is its parent
    assert [link.context.span_id for link in batch.links] == list(span_ids)
    submits = named(exported, "mlqueue.submit")
    assert {s.context.trace_id for s in submits}.isdisjoint({batch.context.trace_id})
    assert batch.attributes == {tracing.MODEL: "demo:1", tracing.JOBS: 3, tracing.ROWS: 3}


def test_a_batch_of_one_job_is_also_its_child(exported: InMemorySpanExporter) -> None:
    job, span_id = submitted("solo")
    with traces.batch_span([job], "demo:1", 1):
        pass
    (batch,) = named(exported, "mlqueue.batch")
    assert batch.parent is not None and batch.parent.span_id == span_id
    assert [link.context.span_id for link in batch.links] == [span_id]


def test_queue_wait_spans_from_the_submit_to_now_and_links_the_task(
    exported: InMemorySpanExporter,
) -> None:
    job, span_id = submitted("j")
    carrier = job["trace"]
    now = float(carrier[tracing.ENQUEUED]) + 0.25
    with tracing.span("run/mlqueue.predict_batch", root=True) as task:
        assert task is not None
        ids = tracing.record_queue_wait(carrier, {tracing.JOB_ID: "j"}, now=now)
    (wait,) = named(exported, "mlqueue.queue_wait")
    assert wait.parent is not None and wait.parent.span_id == span_id
    assert [link.context.span_id for link in wait.links] == [task.get_span_context().span_id]
    assert wait.start_time is not None and wait.end_time is not None
    assert wait.end_time - wait.start_time == pytest.approx(0.25e9, abs=1e3)
    assert wait.attributes is not None
    assert wait.attributes[tracing.QUEUE_WAIT_MS] == pytest.approx(250, abs=0.01)
    assert wait.attributes[tracing.JOB_ID] == "j"
    assert ids == (format(wait.context.trace_id, "032x"), format(wait.context.span_id, "016x"))


def _record(**extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("worker.jobs", logging.INFO, __file__, 1, "job started", None, None)
    record.__dict__.update(extra)
    return record


def test_log_lines_carry_the_current_span_or_their_jobs_own(
    exported: InMemorySpanExporter,
) -> None:
    formatter = JsonFormatter()
    assert "trace_id" not in orjson.loads(formatter.format(_record()))  # no span, no ids
    with tracing.span("run/mlqueue.predict_batch") as span:
        assert span is not None
        context = span.get_span_context()
        line = orjson.loads(formatter.format(_record(job_id="other")))
        assert line["trace_id"] == format(context.trace_id, "032x")
        assert line["span_id"] == format(context.span_id, "016x")
        with tracing.job_logs({"j": ("a" * 32, "b" * 16)}):
            line = orjson.loads(formatter.format(_record(job_id="j")))
            assert (line["trace_id"], line["span_id"]) == ("a" * 32, "b" * 16)
        line = orjson.loads(formatter.format(_record(job_id="j")))  # the block ended
        assert line["trace_id"] == format(context.trace_id, "032x")


@pytest.mark.anyio
async def test_each_job_of_a_batch_message_carries_its_own_context(
    exported: InMemorySpanExporter,
) -> None:
    redis = fakeredis.FakeAsyncRedis()
    sent: list[Any] = []

    async def publish(message_id: str, kwargs: Any, queue: str) -> None:
        await asyncio.sleep(0.01)  # jobs arriving meanwhile share the next message
        sent.append(kwargs)

    batcher = Batcher(JobStore(redis, 60), publish, max_rows=1000, max_wait=0.02)

    async def submit(job_id: str) -> None:
        with tracing.span("mlqueue.submit", {tracing.JOB_ID: job_id}):
            await batcher.add(jobstore.new_record(job_id, kind="json", model="demo", n_rows=1),
                              [ROW], "demo:1")  # fmt: skip

    await asyncio.gather(*(submit(f"j{i}") for i in range(6)))
    submits = {s.attributes[tracing.JOB_ID]: s for s in named(exported, "mlqueue.submit")}  # type: ignore[index]
    carried = {job["id"]: job["trace"] for kwargs in sent for job in kwargs["jobs"]}
    assert set(carried) == set(submits) == {f"j{i}" for i in range(6)}
    for job_id, carrier in carried.items():
        remote = tracing.span_context(carrier)
        assert remote is not None and remote.span_id == submits[job_id].context.span_id
    batches = named(exported, "mlqueue.batch")
    assert len(batches) == len(sent) < 6
    linked = [link.context.span_id for b in batches for link in b.links]
    assert sorted(linked) == sorted(s.context.span_id for s in submits.values())


WITHOUT_THE_EXTRA = """
import sys

# What the extra adds (FastAPI itself may bring opentelemetry-api).
EXTRA = ("opentelemetry.sdk", "opentelemetry.exporter", "opentelemetry.instrumentation")

class NoOpenTelemetry:
    def find_spec(self, name, path=None, target=None):
        if name.startswith(EXTRA):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoOpenTelemetry())
from gateway.app import create_app
from shared import tracing
import worker.tasks, worker.csv_tasks

create_app()
assert not tracing.setup("mlqueue-gateway", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
assert not tracing.ON
assert not [m for m in sys.modules if m.startswith(EXTRA)]
print("untraced")
"""


def test_without_the_tracing_extra_both_sides_run_untraced() -> None:
    """An image or a user without `mlqueue[tracing]`: an endpoint set by mistake changes nothing."""
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_THE_EXTRA],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "untraced"
    assert "the `tracing` extra is not installed" in done.stderr


def test_a_client_span_outside_any_trace_is_dropped_not_exported() -> None:
    """A Redis command of a health probe or a background loop makes no one-span trace."""
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON
    from opentelemetry.trace import SpanKind

    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=tracing._no_lone_redis(ALWAYS_ON))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("PING", kind=SpanKind.CLIENT):
        pass
    with (
        tracer.start_as_current_span("POST /v1/jobs", kind=SpanKind.SERVER),
        tracer.start_as_current_span("HSET", kind=SpanKind.CLIENT),
    ):
        pass
    assert [s.name for s in exporter.get_finished_spans()] == ["HSET", "POST /v1/jobs"]
