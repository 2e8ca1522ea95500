"""Celery tasks: thin wrappers that decode arguments and call the task bodies."""

from __future__ import annotations

from typing import Any

from celery import Task

from shared.tasks import PREDICT, PREDICT_BATCH
from worker.celery_app import app
from worker.predict import run_batch, run_job
from worker.runtime import runtime


@app.task(name=PREDICT, bind=True)
def predict(self: Task, rows: list[list[float]], model: str = "default") -> dict[str, Any]:
    """The public `mlqueue.predict` task (see `shared.tasks`)."""
    return run_job(runtime(), self.request.id, rows, model)


# The batch's own result is not needed (each job's outcome is in the job store): skip storing it.
@app.task(name=PREDICT_BATCH, ignore_result=True)
def predict_batch(jobs: list[dict[str, Any]], model: str) -> dict[str, int]:
    """Several gateway jobs in one message (see `shared.tasks.PREDICT_BATCH`)."""
    return run_batch(runtime(), jobs, model)
