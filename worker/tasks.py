"""Celery tasks: thin wrappers that decode arguments and call the task bodies."""

from __future__ import annotations

from typing import Any

from celery import Task

from shared.tasks import PREDICT
from worker.celery_app import app
from worker.predict import run_job
from worker.runtime import runtime


@app.task(name=PREDICT, bind=True)
def predict(self: Task, rows: list[list[float]], model: str = "default") -> dict[str, Any]:
    """The public `mlqueue.predict` task (see `shared.tasks`)."""
    return run_job(runtime(), self.request.id, rows, model)
