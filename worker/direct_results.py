"""Each direct task's result, written to Celery's result backend for a whole batch at once.

A task run by Celery stores its result itself: one read (a stored success must not be
overwritten) and one write (SET and PUBLISH, which wakes `AsyncResult.get()`) per task. A batch
of direct tasks (`worker.direct_batch`) writes the very same record, built by the backend's own
code, for every task in two round trips: one MGET, then one pipeline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from celery import states
from celery.app.task import Context
from celery.backends.base import Backend
from celery.backends.redis import RedisBackend

from worker.direct_tasks import DirectTask

Outcome = dict[str, Any] | Exception  # the task's return value, or what it failed with


def context(task: DirectTask) -> Context:
    """The task's request as Celery's tracer would give it to the backend."""
    return Context(task.request, args=[], kwargs=task.kwargs)


def store(backend: Backend, tasks: Sequence[DirectTask], outcomes: Mapping[str, Outcome]) -> None:
    """Store each task's outcome under its id (once per id; none if it ignores its result)."""
    unique = {task.id: task for task in tasks if not task.request.get("ignore_result")}
    if not unique:
        return
    if not isinstance(backend, RedisBackend):  # another backend: one task at a time
        for task in unique.values():
            _store_one(backend, task, outcomes[task.id])
        return
    client = backend.client
    keys = [backend.get_key_for_task(task_id) for task_id in unique]
    current = client.mget(keys)
    with client.pipeline() as pipe:
        for key, stored, task in zip(keys, current, unique.values(), strict=True):
            if stored is not None and _succeeded(backend, stored):
                continue  # as in `Backend._store_result`: a success is never overwritten
            outcome = outcomes[task.id]
            state = states.FAILURE if isinstance(outcome, Exception) else states.SUCCESS
            meta = backend._get_result_meta(
                result=backend.encode_result(outcome, state),
                state=state,
                traceback=None,
                request=context(task),
            )
            meta["task_id"] = task.id
            value = backend.encode(meta)
            expires = backend.failure_expires if state == states.FAILURE else backend.expires
            if expires:
                pipe.set(key, value, ex=expires)
            else:
                pipe.set(key, value)
            pipe.publish(key, value)
        pipe.execute()


def _succeeded(backend: Backend, stored: bytes) -> bool:
    try:
        return bool(backend.decode(stored).get("status") == states.SUCCESS)
    except Exception:  # not a record Celery wrote: overwrite it, as Celery would
        return False


def _store_one(backend: Backend, task: DirectTask, outcome: Outcome) -> None:
    if isinstance(outcome, Exception):
        backend.mark_as_failure(task.id, outcome, request=context(task), call_errbacks=False)
    else:
        backend.mark_as_done(task.id, outcome, request=context(task))
