"""Celery tasks: thin wrappers that decode arguments and call the task bodies."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task

from shared.tasks import PREDICT, PREDICT_BATCH, QUEUE_LOW, SHADOW, BatchJob, ShadowKwargs
from worker import traces
from worker.celery_app import app
from worker.predict import run_batch, run_job
from worker.requeue import requeue_if_redis_is_away
from worker.runtime import runtime
from worker.shadow import compare

log = logging.getLogger(__name__)


# Plain messages are coalesced in the consumer and run in batches (`worker.direct_strategy`);
# this body runs the others, one message at a time.
@app.task(name=PREDICT, bind=True, Strategy="worker.direct_strategy:strategy")
def predict(self: Task, rows: list[list[float]], model: str = "default") -> dict[str, Any]:
    """The public `mlqueue.predict` task (kwargs: `shared.tasks.PredictKwargs`)."""
    with requeue_if_redis_is_away():
        return run_job(runtime(), self.request.id, rows, model, send_shadow)


# The batch's own result is not needed (each job's outcome is in the job store): skip storing it.
# The gateway's messages are coalesced in the consumer (`worker.batch_strategy`); this body runs
# any other message sent under this name.
@app.task(name=PREDICT_BATCH, ignore_result=True, Strategy="worker.batch_strategy:strategy")
def predict_batch(jobs: list[BatchJob], model: str) -> dict[str, int]:
    """Several gateway jobs in one message (`shared.tasks.PredictBatchKwargs`)."""
    with requeue_if_redis_is_away(), traces.batch(jobs, model):
        return run_batch(runtime(), jobs, model, send_shadow)


@app.task(name=SHADOW, ignore_result=True)
def shadow(rows: list[list[float]], predictions: list[float], model: str, shadow: str) -> object:
    """Score answered rows with a shadow version, for metrics only (`shared.tasks.ShadowKwargs`)."""
    return compare(runtime(), rows, predictions, model, shadow)


def send_shadow(message: ShadowKwargs) -> None:
    """Send one `mlqueue.shadow` message (never raises: the answers are stored already)."""
    # Low priority: shadow work waits behind every job that someone is waiting for.
    try:
        app.send_task(SHADOW, kwargs=dict(message), queue=QUEUE_LOW)
    except Exception as exc:  # the answers are stored: a lost comparison must not fail them
        log.warning("shadow not sent", extra={"model": message["model"], "error": str(exc)})
