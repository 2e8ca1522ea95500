"""Direct `mlqueue.predict` tasks coalesced in the worker's consumer, as celery-batches does.

The task's `Strategy` (see `worker.tasks`) keeps plain direct tasks in a buffer in the consumer
and sends them to a pool process as one job (`worker.direct_batch`) when the buffer holds
`direct_batch_max` tasks, or, while no batch runs, when the first task has waited
`direct_batch_wait_ms`. While a batch runs the buffer fills and goes when it ends, so batches
grow with the load and cost no wait under it. `worker.coalesce` holds the machinery (and what
stays as it was for each message: acknowledgement, failures, time limits, failover, prefetch).

Unlike celery-batches (pinned to Celery < 5.7), only Celery's public strategy and request
classes are used, and anything but a plain message takes Celery's default path unchanged: a
countdown or ETA, its own time limits, callbacks, a group or chord, a trace context in its
headers (so that its spans keep their shape), positional args or unknown kwargs (so that Celery
reports them as it always has).
"""

from __future__ import annotations

from typing import Any

from celery import Celery, Task
from celery.worker.request import Request

from shared.settings import get_settings
from worker.coalesce import Batcher, Handler, Kind, handler, plain
from worker.direct_batch import execute
from worker.direct_tasks import DirectTask

PLAIN_KWARGS = frozenset({"rows", "model"})


def batchable(payload: Any, headers: dict[str, Any]) -> bool:
    """Whether a message is a plain direct task (see the module's docstring)."""
    kwargs = plain(payload, headers)
    return (
        kwargs is not None
        and "rows" in kwargs
        and PLAIN_KWARGS.issuperset(kwargs)
        and isinstance(kwargs.get("model", ""), str)
    )


def pack(req: Request) -> DirectTask:
    """What a pool process needs of one direct task."""
    return DirectTask(req.id, req.request_dict, req.kwargs)


DIRECT = Kind("direct", batchable, pack, execute)


def strategy(task: Task, app: Celery, consumer: Any, **options: Any) -> Handler:
    """The task's message handler in the consumer: `task.Strategy`."""
    settings = get_settings()
    batcher = Batcher(
        consumer,
        max_size=settings.direct_batch_max,
        wait=settings.direct_batch_wait_ms / 1000,
        time_limits=(app.conf.task_soft_time_limit, app.conf.task_time_limit),
        kind=DIRECT,
    )
    return handler(task, app, consumer, DIRECT, batcher, **options)
