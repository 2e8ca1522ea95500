"""The body of `mlqueue.predict`, free of Celery so that it can be called and tested directly."""

from __future__ import annotations

import logging
import time
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from shared.errors import JobConflict, ServiceError
from worker import metrics
from worker.inference import predict_rows
from worker.runtime import Runtime

log = logging.getLogger(__name__)


class PredictionFailed(ServiceError):
    """Raised when the model itself raised on valid rows."""


def run_job(rt: Runtime, job_id: str, rows: Any, model: str) -> dict[str, Any]:
    """Predict `rows` with `model` for job `job_id`, recording every step in the job store."""
    n_rows = len(rows) if isinstance(rows, list) else 0
    status = rt.jobs.start(job_id, model, n_rows)
    if status != "running":
        return _already_ended(rt, job_id, status, model)
    started = time.perf_counter()
    try:
        info, loaded = rt.models.get(model)
        predict_started = time.perf_counter()
        predictions = predict_rows(loaded, rows)
        metrics.observe_predict(
            info.name, info.version, n_rows, time.perf_counter() - predict_started
        )
    except ServiceError as exc:
        rt.jobs.fail(job_id, type(exc).__name__, exc.message)
        raise
    except SoftTimeLimitExceeded:
        rt.jobs.fail(job_id, "TimeLimitExceeded", "the prediction exceeded its time limit")
        raise
    except Exception as exc:
        # The model raised on rows that passed validation: fail this job, keep serving others.
        message = f"{type(exc).__name__}: {exc}"
        rt.jobs.fail(job_id, PredictionFailed.__name__, message)
        raise PredictionFailed(message) from exc
    rt.jobs.succeed(job_id, info.version, predictions)
    log.info(
        "job succeeded",
        extra={
            "job_id": job_id,
            "model": info.name,
            "version": info.version,
            "rows": n_rows,
            "duration_ms": round(1000 * (time.perf_counter() - started), 2),
        },
    )
    return {"predictions": predictions, "model": info.name, "version": info.version}


def _already_ended(rt: Runtime, job_id: str, status: str, model: str) -> dict[str, Any]:
    """A redelivered or cancelled job: answer from the store instead of predicting again."""
    version, predictions, error = rt.jobs.stored(job_id)
    if status == "succeeded" and predictions is not None:
        return {"predictions": predictions, "model": model, "version": version}
    raise JobConflict(f"job {job_id} is {status}" + (f": {error}" if error else ""))
