"""Celery signal handlers that log and count each `mlqueue.predict` job as it starts and ends.

Kept outside the task bodies so that the job logic stays free of instrumentation: the task's
kwargs say how many rows it had, its return value (or exception) what became of it. Log lines
carry ids, names, counts and timings only, never rows or predictions.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import signals
from celery._state import get_current_task

from shared.tasks import PREDICT
from worker import metrics

log = logging.getLogger(__name__)
_started: dict[str, float] = {}
# Model names of failed jobs come from the message, which anyone may send: keep labels bounded.
_UNTRUSTED_MODEL_ERRORS = {"ModelNotFound", "InvalidInput"}


@signals.task_prerun.connect
def _task_started(task_id: str, task: Any, kwargs: dict[str, Any], **_: Any) -> None:
    if task.name != PREDICT:
        return
    _started[task_id] = time.perf_counter()
    extra = {"job_id": task_id, "model": str(kwargs.get("model", "default")), "rows": _rows(kwargs)}
    log.info("job started", extra=extra)


@signals.task_postrun.connect
def _task_ended(
    task_id: str, task: Any, kwargs: dict[str, Any], retval: Any, state: str, **_: Any
) -> None:
    started = _started.pop(task_id, None)
    if task.name != PREDICT or started is None or state not in ("SUCCESS", "FAILURE"):
        return
    seconds = time.perf_counter() - started
    n_rows = _rows(kwargs)
    if state == "SUCCESS" and isinstance(retval, dict):
        # run_job itself logs "job succeeded" (with the model's timings).
        model, version = str(retval.get("model")), str(retval.get("version"))
        metrics.observe_job(model, version, "succeeded", n_rows, seconds)
        return
    error_type = type(retval).__name__
    spec = str(kwargs.get("model", "default"))
    metrics.observe_job(*failed_labels(spec, error_type), "failed", n_rows, seconds, error_type)
    name, _sep, version = spec.partition(":")
    # The message stays in the job record: it may quote the offending cell of a bad row.
    log.warning(
        "job failed",
        extra={
            "job_id": task_id,
            "model": name,
            "version": version or None,
            "rows": n_rows,
            "error_type": error_type,
            "duration_ms": round(1000 * seconds, 2),
        },
    )


class CurrentJobId(logging.Filter):
    """Adds `job_id` to every record logged while a task runs (Celery's own lines included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        task = get_current_task()  # what Celery's own TaskFormatter uses
        if task is not None and not hasattr(record, "job_id"):
            record.job_id = task.request.id
        return True


def failed_labels(spec: str, error_type: str) -> tuple[str, str]:
    """The (model, version) labels of a failed job whose model spec was `spec`."""
    if error_type in _UNTRUSTED_MODEL_ERRORS:
        return "unknown", ""
    name, _, version = spec.partition(":")
    return name[:64], version[:32]


def _rows(kwargs: dict[str, Any]) -> int:
    rows = kwargs.get("rows")
    return len(rows) if isinstance(rows, list) else 0
