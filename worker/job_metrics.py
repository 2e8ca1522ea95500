"""Celery signal handlers that count every `mlqueue.predict` job as it ends (see worker.metrics).

Kept outside the task bodies so that the job logic stays free of instrumentation: the task's
kwargs say how many rows it had, its return value (or exception) what became of it.
"""

from __future__ import annotations

import time
from typing import Any

from celery import signals

from shared.tasks import PREDICT
from worker import metrics

_started: dict[str, float] = {}
# Model names of failed jobs come from the message, which anyone may send: keep labels bounded.
_UNTRUSTED_MODEL_ERRORS = {"ModelNotFound", "InvalidInput"}


@signals.task_prerun.connect
def _task_started(task_id: str, **_: Any) -> None:
    _started[task_id] = time.perf_counter()


@signals.task_postrun.connect
def _task_ended(
    task_id: str, task: Any, kwargs: dict[str, Any], retval: Any, state: str, **_: Any
) -> None:
    started = _started.pop(task_id, None)
    if task.name != PREDICT or started is None or state not in ("SUCCESS", "FAILURE"):
        return
    seconds = time.perf_counter() - started
    rows = kwargs.get("rows")
    n_rows = len(rows) if isinstance(rows, list) else 0
    if state == "SUCCESS" and isinstance(retval, dict):
        model, version = str(retval.get("model")), str(retval.get("version"))
        metrics.observe_job(model, version, "succeeded", n_rows, seconds)
        return
    error_type = type(retval).__name__
    model, version = failed_labels(str(kwargs.get("model", "default")), error_type)
    metrics.observe_job(model, version, "failed", n_rows, seconds, error_type)


def failed_labels(spec: str, error_type: str) -> tuple[str, str]:
    """The (model, version) labels of a failed job whose model spec was `spec`."""
    if error_type in _UNTRUSTED_MODEL_ERRORS:
        return "unknown", ""
    name, _, version = spec.partition(":")
    return name[:64], version[:32]
