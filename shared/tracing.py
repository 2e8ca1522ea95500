"""OpenTelemetry traces: optional, off by default, and free when off.

Tracing is on once `setup` found the `tracing` extra installed and an OTLP endpoint configured
through the standard variables (`OTEL_EXPORTER_OTLP_ENDPOINT` or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`); the rest (protocol, headers, sampler, service name,
resource attributes, batching) is the SDK's own `OTEL_*` configuration, read by the SDK. These
are OpenTelemetry's variables, not ours, which is why they are not `Settings` fields.

When off, every hook tests the module flag `ON` (or gets the shared null context from `span`)
and never calls into OpenTelemetry; this module imports none of it until `setup` succeeds.

A job's trace context travels inside our own messages as a plain dict (a `Carrier`: the W3C
`traceparent`/`tracestate` of the job's submit span, plus `enqueued`, epoch seconds), so it
survives the micro-batch (many jobs in one message, each with its own trace) and a message sent
again by the resender without Celery's headers. Attributes name jobs, models, versions and
counts; never feature values.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import Sampler
    from opentelemetry.trace import Span, SpanContext, Tracer

ON = False
"""True once `setup` (or `enable`) installed a tracer provider: the hooks' one test."""

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
GATEWAY = "mlqueue-gateway"
WORKER = "mlqueue-worker"
ENQUEUED = "enqueued"  # the carrier's extra key: when the job (or chunk) was queued

# Span attribute names.
JOB_ID = "mlqueue.job.id"
JOB_KIND = "mlqueue.job.kind"
MODEL = "mlqueue.model"
VERSION = "mlqueue.model.version"
ROWS = "mlqueue.rows"
JOBS = "mlqueue.jobs"
CHUNK = "mlqueue.chunk"
QUEUE_WAIT_MS = "mlqueue.queue_wait_ms"

Carrier = dict[str, str]
Attributes = Mapping[str, str | int | float | bool]

log = logging.getLogger(__name__)
_OFF: AbstractContextManager[Span | None] = contextlib.nullcontext(None)
_provider: TracerProvider | None = None
# Job id -> (trace id, span id) of the job's own worker-side span, for log lines about a job
# handled inside another trace (a micro-batch): they then join the job's trace, not the batch's.
_job_log_ids: dict[str, tuple[str, str]] = {}


def configured(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for traces: an OTLP endpoint, and the SDK not disabled."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return any(environ.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def setup(service_name: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Install a tracer provider exporting over OTLP when the environment asks for it; whether
    tracing is on. Without the `tracing` extra it says so once and stays off."""
    if ON:
        return True
    if not configured(environ):
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning("an OTLP endpoint is set but the `tracing` extra is not installed: no traces")
        return False
    named = environ.get("OTEL_SERVICE_NAME") or "service.name=" in environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    # Resource.create merges OTEL_RESOURCE_ATTRIBUTES/OTEL_SERVICE_NAME; ours is the default.
    resource = Resource.create({} if named else {"service.name": service_name})
    # What OTEL_TRACES_SAMPLER(_ARG) ask for, as the SDK reads them.
    configured_sampler = TracerProvider(shutdown_on_exit=False).sampler
    provider = TracerProvider(resource=resource, sampler=_no_lone_redis(configured_sampler))
    provider.add_span_processor(BatchSpanProcessor(_exporter(environ)))
    trace.set_tracer_provider(provider)
    enable(provider)
    return True


def _no_lone_redis(sampler: Sampler) -> Sampler:
    """`sampler`, except that a client span outside any trace (a Redis command of a health probe,
    a metrics scrape or a background loop: the only client calls instrumented here) is dropped
    instead of making a one-span trace of its own."""
    from opentelemetry.sdk.trace.sampling import Decision, SamplingResult
    from opentelemetry.sdk.trace.sampling import Sampler as Base
    from opentelemetry.trace import SpanKind, get_current_span

    class NoLoneRedis(Base):
        def should_sample(
            self,
            parent_context: Context | None,
            trace_id: int,
            name: str,
            kind: SpanKind | None = None,
            *args: Any,
            **kwargs: Any,
        ) -> SamplingResult:
            lone = not get_current_span(parent_context).get_span_context().is_valid
            if lone and kind is SpanKind.CLIENT:
                return SamplingResult(Decision.DROP)
            return sampler.should_sample(parent_context, trace_id, name, kind, *args, **kwargs)

        def get_description(self) -> str:
            return f"NoLoneRedis{{{sampler.get_description()}}}"

    return NoLoneRedis()


def _exporter(environ: Mapping[str, str]) -> Any:
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    # Each exporter reads its endpoint, headers, timeout and compression from OTEL_* itself.
    if protocol.strip() == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpanExporter,
    )

    return HttpSpanExporter()


def enable(provider: TracerProvider) -> None:
    """Trace through `provider` (`setup` calls this; unit tests pass an in-memory one)."""
    global ON, _provider
    _provider, ON = provider, True


def disable() -> None:
    """Stop tracing (spans already ended are still exported by `shutdown`)."""
    global ON
    ON = False
    _job_log_ids.clear()


def shutdown() -> None:
    """Export what is buffered and stop; for a process about to exit."""
    if _provider is not None:
        _provider.shutdown()
    disable()


def tracer() -> Tracer:
    """mlqueue's tracer (only while `ON`)."""
    assert _provider is not None
    return _provider.get_tracer("mlqueue")


def span(
    name: str,
    attributes: Attributes | None = None,
    *,
    carrier: Mapping[str, str] | None = None,
    links: Iterable[Mapping[str, str]] = (),
    root: bool = False,
) -> AbstractContextManager[Span | None]:
    """A span made current for the block, as a child of the current span, of `carrier`'s span if
    given, or a new trace if `root`; linked to the spans of `links` (carriers). When off: a null
    context yielding None, and no call into OpenTelemetry."""
    if not ON:
        return _OFF
    return _span(name, attributes, carrier, links, root)


@contextlib.contextmanager
def _span(
    name: str,
    attributes: Attributes | None,
    carrier: Mapping[str, str] | None,
    links: Iterable[Mapping[str, str]],
    root: bool,
) -> Iterator[Span]:
    from opentelemetry.context import Context
    from opentelemetry.trace import Link

    parent = extract(carrier) if carrier is not None else Context() if root else None
    linked = [Link(c) for c in map(span_context, links) if c is not None]
    with tracer().start_as_current_span(
        name, context=parent, attributes=attributes, links=linked
    ) as current:
        yield current


def carrier() -> Carrier:
    """The current span's W3C trace context, plus the time now as `enqueued` (only while `ON`)."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    found: Carrier = {}
    TraceContextTextMapPropagator().inject(found)
    found[ENQUEUED] = f"{time.time():.6f}"
    return found


def extract(carrier: Mapping[str, str]) -> Context:
    """The context of `carrier`'s span (an empty context when it holds none)."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    # Anyone may send a task: only str values reach the parser.
    clean = {k: v for k, v in carrier.items() if isinstance(k, str) and isinstance(v, str)}
    return TraceContextTextMapPropagator().extract(clean)


def span_context(carrier: Mapping[str, str]) -> SpanContext | None:
    """The remote span named by `carrier`, or None when it names none (or is not a mapping)."""
    from opentelemetry import trace

    if not isinstance(carrier, Mapping):
        return None
    found = trace.get_current_span(extract(carrier)).get_span_context()
    return found if found.is_valid else None


def record_queue_wait(
    carrier: Mapping[str, str], attributes: Attributes, now: float | None = None
) -> tuple[str, str] | None:
    """End a `mlqueue.queue_wait` span from `carrier`'s `enqueued` time until now, as a child of
    the carrier's span and linked to the current one (the task that took the message); returns
    its (trace id, span id), or None when `carrier` names no span."""
    from opentelemetry.trace import Link, get_current_span

    parent = span_context(carrier)
    if parent is None:
        return None
    now = time.time() if now is None else now
    try:
        enqueued = min(float(carrier.get(ENQUEUED, now)), now)
    except ValueError:
        enqueued = now
    current = get_current_span().get_span_context()
    started = tracer().start_span(
        "mlqueue.queue_wait",
        context=extract(carrier),
        attributes={**attributes, QUEUE_WAIT_MS: round(1000 * (now - enqueued), 3)},
        links=[Link(current)] if current.is_valid else [],
        start_time=int(enqueued * 1e9),
    )
    started.end(end_time=int(now * 1e9))
    ids = started.get_span_context()
    return _hex(ids.trace_id, ids.span_id)


@contextlib.contextmanager
def job_logs(job_ids: Mapping[str, tuple[str, str]]) -> Iterator[None]:
    """Inside the block, log lines with one of these `job_id`s carry that job's trace ids."""
    _job_log_ids.update(job_ids)
    try:
        yield
    finally:
        for job_id in job_ids:
            _job_log_ids.pop(job_id, None)


def set_attributes(attributes: Attributes) -> None:
    """Add attributes to the current span (only while `ON`)."""
    from opentelemetry.trace import get_current_span

    get_current_span().set_attributes(attributes)


def log_ids(job_id: object = None) -> tuple[str, str] | None:
    """(trace id, span id) for a log line: job `job_id`'s own when it runs in another trace,
    else the current span's; None outside any span (only while `ON`)."""
    from opentelemetry.trace import get_current_span

    if isinstance(job_id, str) and job_id in _job_log_ids:
        return _job_log_ids[job_id]
    current = get_current_span().get_span_context()
    return _hex(current.trace_id, current.span_id) if current.is_valid else None


def _hex(trace_id: int, span_id: int) -> tuple[str, str]:
    return format(trace_id, "032x"), format(span_id, "016x")
