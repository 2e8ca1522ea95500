"""The gateway's `mlqueue.predict_batch` messages coalesced in the worker's consumer.

The gateway batches the jobs that arrive while it sends (`gateway.batcher`), but an idle gateway
sends each job at once, alone: at a steady arrival rate below capacity most messages hold one
job. Run one by one, each message pays a job-store round trip to start, one to finish and a
model call: at a few hundred jobs per second the pool fell behind, the queue grew and latency
climbed to seconds at half the capacity measured with a closed-loop client. Here the consumer
buffers these messages and sends whatever has gathered to the next free pool process as one job
(`worker.coalesce`, eager: a free process never waits): batches grow with the backlog, so a
queue that forms is drained in a few large model calls instead of many small ones.

A message the gateway would not have sent (another shape, a job without an id, Celery options
this path does not honour) takes Celery's default path and fails or succeeds alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from celery import Celery, Task
from celery.worker.request import Request

from shared.settings import get_settings
from shared.tasks import BatchJob, PredictBatchKwargs
from worker import traces
from worker.coalesce import Batcher, Handler, Kind, handler, plain
from worker.failures import ran_or_handed_back
from worker.predict import run_batch
from worker.runtime import Runtime, runtime
from worker.shadow import ShadowSender

log = logging.getLogger(__name__)
KWARGS = frozenset({"jobs", "model"})


def batchable(payload: Any, headers: dict[str, Any]) -> bool:
    """Whether a message is a micro-batch as the gateway sends it."""
    kwargs = plain(payload, headers)
    if kwargs is None or set(kwargs) != KWARGS or not isinstance(kwargs["model"], str):
        return False
    jobs = kwargs["jobs"]
    return (
        isinstance(jobs, list)
        and bool(jobs)
        and all(isinstance(job, dict) and isinstance(job.get("id"), str) for job in jobs)
    )


Message = tuple[str, PredictBatchKwargs]  # (message id, its kwargs)


def pack(req: Request) -> Message:
    """What a pool process needs of one message: its id (for the log) and kwargs."""
    kwargs: PredictBatchKwargs = req.kwargs
    return str(req.id), kwargs


def rows(req: Request) -> int:
    """A message's share of a batch: its rows (a job's `rows` may be anything: count lists)."""
    return sum(len(j["rows"]) if isinstance(j.get("rows"), list) else 1 for j in req.kwargs["jobs"])


def execute(messages: list[Message]) -> bool:
    """The pool's entry point; True when every message must be handed back (Redis is away)."""
    from worker.tasks import send_shadow

    return run_messages(runtime(), messages, send_shadow)


def run_messages(
    rt: Runtime, messages: Sequence[Message], on_shadow: ShadowSender | None = None
) -> bool:
    """Run the jobs of several messages, one `run_batch` per model; True if Redis failed and
    none may be acknowledged (the jobs already ended stay so: the redelivery skips them).

    A job id in two messages (a redelivery next to its original) runs once.
    """
    started = time.perf_counter()
    groups: dict[str, dict[str, BatchJob]] = {}
    for _, message in messages:
        group = groups.setdefault(message["model"], {})
        for job in message["jobs"]:
            group.setdefault(job["id"], job)

    def run() -> None:
        for model, jobs in groups.items():
            with traces.batch(jobs.values(), model):
                run_batch(rt, list(jobs.values()), model, on_shadow)

    if ran_or_handed_back(run, "batches", {"messages": len(messages)}):
        return True
    log.info(
        "batches done",
        extra={"messages": len(messages), "message_ids": [m for m, _ in messages],
               "models": len(groups),
               "jobs": sum(len(jobs) for jobs in groups.values()),
               "duration_ms": round(1000 * (time.perf_counter() - started), 2)},
    )  # fmt: skip
    return False


GATEWAY = Kind("gateway", batchable, pack, execute, size=rows, eager=True)


def strategy(task: Task, app: Celery, consumer: Any, **options: Any) -> Handler:
    """The task's message handler in the consumer: `task.Strategy`."""
    settings = get_settings()
    batcher = Batcher(
        consumer,
        max_size=settings.batch_max_rows,
        wait=0.0,
        time_limits=(app.conf.task_soft_time_limit, app.conf.task_time_limit),
        kind=GATEWAY,
        max_messages=settings.direct_batch_max,
    )
    return handler(task, app, consumer, GATEWAY, batcher, **options)
