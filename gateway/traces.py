"""The gateway's tracing hooks: instrumentation of the app, Redis and Celery's publishing, and the
micro-batch's span. Nothing here runs unless `shared.tracing.setup` turned tracing on."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from fastapi import FastAPI

from shared import tracing
from shared.schemas import ModelInfo
from shared.tasks import BatchJob

if TYPE_CHECKING:  # the `tracing` extra may be absent
    from opentelemetry.trace import Span

# Probes and scrapes: frequent, and nothing to follow in them.
UNTRACED_URLS = "/healthz,/readyz,/metrics"


def instrument(app: FastAPI) -> None:
    """Trace `app`'s requests and Redis commands, when tracing is configured."""
    if not tracing.setup(tracing.GATEWAY):
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    # No span per ASGI message (`receive`/`send`): dozens per upload, nothing learnt from them.
    FastAPIInstrumentor.instrument_app(
        app, excluded_urls=UNTRACED_URLS, exclude_spans=["receive", "send"]
    )
    if not RedisInstrumentor().is_instrumented_by_opentelemetry:
        RedisInstrumentor().instrument()
    # The gateway writes its task messages itself (`gateway.publisher`), making the
    # `apply_async/<task>` span and header that Celery's instrumentation would.


def batch_span(
    jobs: Sequence[BatchJob], model: str, rows: int
) -> AbstractContextManager[Span | None]:
    """The span of one micro-batch message: it links the submit span of each job it carries;
    a batch of one job is also that job's child, so a lone job's trace reads end to end."""
    if not tracing.ON:
        return tracing.span("mlqueue.batch")
    carriers = [job["trace"] for job in jobs if "trace" in job]
    single = carriers[0] if len(jobs) == 1 and carriers else None
    attributes: tracing.Attributes = {
        tracing.MODEL: model,
        tracing.JOBS: len(jobs),
        tracing.ROWS: rows,
    }
    return tracing.span(
        "mlqueue.batch", attributes, carrier=single, links=carriers, root=single is None
    )


def job_attributes(
    job_id: str, kind: str, info: ModelInfo, rows: int | None = None
) -> tracing.Attributes:
    """A submit span's attributes: ids, names and counts, never feature values."""
    attributes: dict[str, str | int] = {
        tracing.JOB_ID: job_id,
        tracing.JOB_KIND: kind,
        tracing.MODEL: info.name,
        tracing.VERSION: info.version,
    }
    if rows is not None:
        attributes[tracing.ROWS] = rows
    return attributes
