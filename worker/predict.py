"""The bodies of `mlqueue.predict` and `mlqueue.predict_batch`, free of Celery so that they can be
called and tested directly."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from celery.exceptions import SoftTimeLimitExceeded

from shared import tracing
from shared.errors import InvalidInput, JobConflict, ServiceError
from shared.model import Model
from shared.schemas import ModelInfo
from shared.tasks import BatchJob
from worker import metrics, observe
from worker.failures import classify, reraise
from worker.inference import Matrix, predict_rows, to_matrix
from worker.runtime import Runtime
from worker.shadow import ShadowSender, shadow_messages

log = logging.getLogger(__name__)
Failures = dict[str, tuple[str, str]]  # job id -> (error type, message)


def run_job(
    rt: Runtime, job_id: str, rows: Any, model: str, on_shadow: ShadowSender | None = None
) -> dict[str, Any]:
    """Predict `rows` with `model` for job `job_id`, recording every step in the job store;
    a shadow version of the model's alias gets the rows through `on_shadow` once stored."""
    n_rows = len(rows) if isinstance(rows, list) else 0
    status = rt.jobs.start(job_id, model, n_rows)
    if status != "running":
        return _already_ended(rt, job_id, status, model)
    try:
        pinned, loaded = rt.models.pin(model, job_id)  # an alias splitting traffic keys on the id
        info = pinned.info
        predict_started = time.perf_counter()
        with tracing.span("mlqueue.predict", _attributes(info, n_rows, {tracing.JOB_ID: job_id})):
            predictions = predict_rows(loaded, rows)
        seconds = time.perf_counter() - predict_started
        metrics.observe_predict(info.name, info.version, n_rows, seconds)
    except Exception as exc:
        failure = classify(exc)
        if not failure.retryable:
            rt.jobs.fail(job_id, *failure.stored)
        reraise(exc, failure)
    with tracing.span("mlqueue.store", {tracing.JOB_ID: job_id}):
        rt.jobs.succeed(job_id, info.version, predictions)
    if on_shadow is not None and pinned.shadow is not None:
        shadow = f"{pinned.shadow.name}:{pinned.shadow.version}"
        on_shadow(
            {"rows": rows, "predictions": predictions, "model": pinned.spec, "shadow": shadow}
        )
    # "job started" and "job succeeded"/"job failed" are logged by worker.job_events.
    return {"predictions": predictions, "model": info.name, "version": info.version}


def _already_ended(rt: Runtime, job_id: str, status: str, model: str) -> dict[str, Any]:
    """A redelivered or cancelled job: answer from the store instead of predicting again."""
    version, predictions, error = rt.jobs.stored(job_id)
    if status == "succeeded" and predictions is not None:
        return {"predictions": predictions, "model": model, "version": version}
    raise JobConflict(f"job {job_id} is {status}" + (f": {error}" if error else ""))


def run_batch(
    rt: Runtime, jobs: list[BatchJob], model: str, on_shadow: ShadowSender | None = None
) -> dict[str, int]:
    """Predict several gateway jobs with one model call; each job succeeds or fails on its own.

    Jobs already finished or cancelled (a redelivery, a cancel) are skipped. Results are stored
    before this returns, so the message is acknowledged only once every job has its outcome.
    Jobs with a shadow version are then handed to `on_shadow`, answers stored first.
    """
    started = time.perf_counter()
    sizes = [(str(job["id"]), len(job["rows"])) for job in jobs]
    statuses = rt.jobs.start_many(sizes, model)
    live = {str(j["id"]): j["rows"] for j, s in zip(jobs, statuses, strict=True) if s == "running"}
    observe.batch_started(live, model, dict(sizes))
    failed: Failures = {}
    version, succeeded = _predict_batch(rt, live, model, failed)
    with tracing.span("mlqueue.store", {tracing.JOBS: len(succeeded) + len(failed)}):
        rt.jobs.finish_many(version, succeeded, failed)
    if on_shadow is not None and succeeded:
        for message in shadow_messages(jobs, live, succeeded, model):
            on_shadow(message)
    observe.batch_ended(
        model, version, dict(sizes), succeeded, failed, time.perf_counter() - started
    )
    log.info(
        "batch done",
        extra={"jobs": len(jobs), "succeeded": len(succeeded), "failed": len(failed),
               "model": model, "rows": sum(n for _, n in sizes),
               "duration_ms": round(1000 * (time.perf_counter() - started), 2)},
    )  # fmt: skip
    return {"jobs": len(jobs), "succeeded": len(succeeded), "failed": len(failed)}


def _predict_batch(
    rt: Runtime, live: dict[str, Any], model: str, failed: Failures
) -> tuple[str, dict[str, list[float]]]:
    """(model version, predictions per job) of the live jobs; the others land in `failed`."""
    version = ""
    try:
        info, loaded = rt.models.get(model)
        version = info.version
        matrices = _matrices(live, loaded.n_features, failed)
        predict_started = time.perf_counter()
        n_rows = sum(len(m) for m in matrices.values())
        with tracing.span("mlqueue.predict", _attributes(info, n_rows, {tracing.JOBS: len(live)})):
            succeeded = _predict_together(loaded, matrices, failed)
        if matrices:
            seconds = time.perf_counter() - predict_started
            metrics.observe_predict(info.name, version, n_rows, seconds)
    except (ServiceError, SoftTimeLimitExceeded) as exc:
        # The model is missing or untrusted, or time ran out: every job not failed yet says so.
        # Its jobs are counted one by one (`observe.batch_ended`); the line says why, once.
        failure = classify(exc)
        extra = {"model": model, "jobs": len(live)}
        observe.failed(
            "batch", failure.type, model, extra,
            level=logging.ERROR, counted=False, reason=failure.message,
        )  # fmt: skip
        failed.update((job_id, failure.stored) for job_id in live if job_id not in failed)
        return version, {}
    return version, succeeded


def _matrices(live: dict[str, Any], n_features: int, failed: Failures) -> dict[str, Matrix]:
    """Each live job's rows as a matrix; a job with bad rows fails alone."""
    matrices = {}
    for job_id, rows in live.items():
        try:
            matrices[job_id] = to_matrix(rows, n_features)
        except InvalidInput as exc:
            failed[job_id] = classify(exc).stored
    return matrices


def _predict_together(
    model: Model, matrices: dict[str, Matrix], failed: Failures
) -> dict[str, list[float]]:
    """Predict all jobs' rows in one call and split the predictions back per job."""
    if not matrices:
        return {}
    try:
        predictions = model.predict(np.concatenate(list(matrices.values())))
    except SoftTimeLimitExceeded:
        raise  # out of time: do not start over job by job
    except Exception:
        # Some job's rows make the model raise: predict each alone so only that job fails.
        return _predict_alone(model, matrices, failed)
    bounds = np.cumsum([len(m) for m in matrices.values()])[:-1]
    parts = np.split(predictions, bounds)
    return {job_id: part.tolist() for job_id, part in zip(matrices, parts, strict=True)}


def _predict_alone(
    model: Model, matrices: dict[str, Matrix], failed: Failures
) -> dict[str, list[float]]:
    succeeded = {}
    for job_id, matrix in matrices.items():
        try:
            succeeded[job_id] = model.predict(matrix).tolist()
        except SoftTimeLimitExceeded:
            raise
        except Exception as exc:
            failed[job_id] = classify(exc).stored
    return succeeded


def _attributes(info: ModelInfo, n_rows: int, more: tracing.Attributes) -> tracing.Attributes:
    return {tracing.MODEL: info.name, tracing.VERSION: info.version, tracing.ROWS: n_rows, **more}
