"""The worker's tracing hooks: set up in each pool process, and each job's queue wait.

Celery's instrumentation gives each task a `run/<task name>` span that continues the sender's
trace from the message headers (the gateway's batch or chunk span, or the trace of whoever
enqueued `mlqueue.predict` directly). A micro-batch carries many jobs, each with its own trace
context in the message (`shared.tasks.BatchJob`): each job gets a `mlqueue.queue_wait` span in its
own trace, from submit to the batch's start, linked to the batch's span, and its log lines join
its own trace. Nothing here calls into OpenTelemetry unless tracing is on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Any

from celery import signals

from shared import tracing
from shared.tasks import BatchJob, ScoreChunkKwargs

_OFF: AbstractContextManager[None] = contextlib.nullcontext()


@signals.worker_process_init.connect
def _setup(**_: Any) -> None:
    # After fork: each pool process exports through its own connection and thread.
    if not tracing.setup(tracing.WORKER):
        return
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    CeleryInstrumentor().instrument()
    RedisInstrumentor().instrument()


@signals.worker_process_shutdown.connect
def _flush(**_: Any) -> None:
    tracing.shutdown()


def batch(jobs: Iterable[BatchJob], model: str) -> AbstractContextManager[None]:
    """Around a micro-batch: each job's queue wait, and its log lines in its own trace."""
    if not tracing.ON:
        return _OFF
    return _queued([(job, {tracing.JOB_ID: str(job["id"]), tracing.MODEL: model}) for job in jobs])


def chunk(message: ScoreChunkKwargs) -> AbstractContextManager[None]:
    """Around a chunk of a CSV job: its queue wait, in its job's trace."""
    if not tracing.ON:
        return _OFF
    attributes: tracing.Attributes = {
        tracing.JOB_ID: message["job_id"],
        tracing.CHUNK: message["index"],
    }
    return _queued([(message, attributes)])


@contextlib.contextmanager
def _queued(entries: list[tuple[Mapping[str, object], tracing.Attributes]]) -> Iterator[None]:
    job_ids = {}
    for entry, attributes in entries:
        carrier = entry.get("trace")  # from the message: anyone may send one, or none
        ids = tracing.record_queue_wait(carrier, attributes) if isinstance(carrier, dict) else None
        if ids is not None:
            job_ids[str(attributes[tracing.JOB_ID])] = ids
    with tracing.job_logs(job_ids):
        yield
