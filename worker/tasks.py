"""Celery tasks: thin wrappers that decode arguments and call the task bodies."""

from __future__ import annotations

from typing import Any

from celery import Task
from celery.exceptions import Reject
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.tasks import PREDICT
from worker.celery_app import app
from worker.predict import run_job
from worker.runtime import runtime


@app.task(name=PREDICT, bind=True)
def predict(self: Task, rows: list[list[float]], model: str = "default") -> dict[str, Any]:
    """The public `mlqueue.predict` task (see `shared.tasks`)."""
    try:
        return run_job(runtime(), self.request.id, rows, model)
    except (RedisConnectionError, RedisTimeoutError) as exc:
        # Redis went away mid-job: a failure here would ack the message and lose the job. Hand
        # it back instead (or, if Redis is still down, leave it unacked for the visibility
        # timeout); the job store's sticky states make the second run safe.
        raise Reject(f"Redis unavailable: {type(exc).__name__}", requeue=True) from exc
