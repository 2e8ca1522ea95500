"""Celery signal handlers that log and count each job's task as it starts and ends.

Kept outside the task bodies so that the job logic stays free of instrumentation: the task's
kwargs say how many rows it had, its return value (or exception) what became of it. Micro-batch
messages (`mlqueue.predict_batch`) carry many jobs: `run_batch` reports those through
`worker.observe` itself; here only a batch that failed as a whole is logged. A CSV job's
chunks (`mlqueue.score_chunk`) count their rows; the chunk that ends the job counts and logs it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import signals
from celery._state import get_current_task

from shared.tasks import PREDICT, PREDICT_BATCH, SCORE_CHUNK
from worker import observe

_started: dict[str, float] = {}
# Model names of failed jobs come from the message, which anyone may send: keep labels bounded.
_UNTRUSTED_MODEL_ERRORS = {"ModelNotFound", "InvalidInput"}


@signals.task_prerun.connect
def _task_started(task_id: str, task: Any, kwargs: dict[str, Any], **_: Any) -> None:
    _started[task_id] = time.perf_counter()
    if task.name == PREDICT:
        observe.job_started(task_id, str(kwargs.get("model", "default")), _rows(kwargs))


@signals.task_postrun.connect
def _task_ended(
    task_id: str, task: Any, kwargs: dict[str, Any], retval: Any, state: str, **_: Any
) -> None:
    started = _started.pop(task_id, None)
    if started is None or state not in ("SUCCESS", "FAILURE"):
        return
    seconds = time.perf_counter() - started
    if task.name == PREDICT_BATCH and state == "FAILURE":
        _batch_failed(kwargs, type(retval).__name__, seconds)
    if task.name == SCORE_CHUNK:
        _chunk_ended(kwargs, retval, state)
    if task.name != PREDICT:
        return
    if state == "SUCCESS" and isinstance(retval, dict):
        model, version = str(retval.get("model")), str(retval.get("version"))
        observe.job_ended(task_id, model, version, _rows(kwargs), seconds)
        return
    error_type = type(retval).__name__
    model, version = failed_labels(str(kwargs.get("model", "default")), error_type)
    observe.job_ended(task_id, model, version, _rows(kwargs), seconds, error_type)


def _batch_failed(kwargs: dict[str, Any], error_type: str, seconds: float) -> None:
    # The message failed as a whole (its jobs were not counted one by one): count it once.
    model = str(kwargs.get("model", "")).partition(":")[0]
    jobs = kwargs.get("jobs")
    n_jobs = len(jobs) if isinstance(jobs, list) else 0
    extra = {"model": model, "jobs": n_jobs, "duration_ms": round(1000 * seconds, 2)}
    observe.failed("batch", error_type, model, extra, level=logging.ERROR)


def _chunk_ended(kwargs: dict[str, Any], retval: Any, state: str) -> None:
    # A bad line returns "failed" (the job failed cleanly); other errors raise.
    error_type = type(retval).__name__ if state == "FAILURE" else ""
    status = str(retval) if state == "SUCCESS" else "failed"
    if status not in ("running", "succeeded", "failed"):
        return  # skipped: scored before, cancelled, or the job already ended
    rows = kwargs.get("rows")
    observe.chunk_ended(
        str(kwargs.get("job_id")),
        str(kwargs.get("model", "")),
        int(kwargs.get("index", -1)),
        rows if isinstance(rows, int) else 0,
        status,
        error_type,
    )


class CurrentTaskId(logging.Filter):
    """Adds `task_id` to every record logged while a task runs (Celery's own lines included).

    For `mlqueue.predict` the task id is the job id; a micro-batch's is its message id, which
    the gateway's "batch sent" line links to the job ids it carries.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        task = get_current_task()  # what Celery's own TaskFormatter uses
        if task is not None and not hasattr(record, "task_id"):
            record.task_id = task.request.id
        return True


def failed_labels(spec: str, error_type: str) -> tuple[str, str]:
    """The (model, version) of a failed job whose model spec was `spec`, safe as labels."""
    if error_type in _UNTRUSTED_MODEL_ERRORS:
        return "unknown", ""
    name, _sep, version = spec.partition(":")
    return name[:64], version[:32]


def _rows(kwargs: dict[str, Any]) -> int:
    rows = kwargs.get("rows")
    return len(rows) if isinstance(rows, list) else 0
