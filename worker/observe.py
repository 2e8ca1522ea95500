"""One log line and one count per job event, for single jobs and micro-batches alike.

Lines carry ids, names, counts and timings only, never rows, predictions or error messages (a
message may quote the offending cell of a bad row; it stays in the job record).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from worker import metrics

log = logging.getLogger("worker.jobs")


def job_started(job_id: str, model: str, n_rows: int) -> None:
    """A job began (its record is now `running`)."""
    log.info("job started", extra={"job_id": job_id, "model": model, "rows": n_rows})


def job_ended(
    job_id: str, model: str, version: str, n_rows: int, seconds: float, error_type: str = ""
) -> None:
    """A job succeeded (no `error_type`) or failed with `error_type`."""
    outcome = "failed" if error_type else "succeeded"
    metrics.observe_job(model, version, outcome, n_rows, seconds)
    extra: dict[str, object] = {
        "job_id": job_id,
        "model": model,
        "version": version or None,
        "rows": n_rows,
        "duration_ms": round(1000 * seconds, 2),
    }
    if error_type:
        failed("job", error_type, model, extra)
    else:
        log.info("job succeeded", extra=extra)


def failed(
    what: str,
    error_type: str,
    model: str,
    extra: Mapping[str, object],
    *,
    level: int = logging.WARNING,
    counted: bool = True,
    reason: str = "",
) -> None:
    """The one report of a failure: a "<what> failed" line with its error type, and a count by
    `model` and error type unless `counted` is False (its jobs are counted one by one).

    A job's error message stays out of the line, as it may quote a cell of the offending row;
    `reason` is for what the operator must act on (a model refused), and is never row data.
    """
    if counted:
        metrics.observe_failure(model, error_type)
    event = f"{what} failed: {reason}" if reason else f"{what} failed"
    log.log(level, event, extra={**extra, "error_type": error_type})


def batch_started(job_ids: Iterable[str], model: str, sizes: Mapping[str, int]) -> None:
    """The jobs of one micro-batch that are live (not already ended or cancelled) began."""
    for job_id in job_ids:
        job_started(job_id, model, sizes.get(job_id, 0))


def batch_ended(
    model: str,
    version: str,
    sizes: Mapping[str, int],
    succeeded: Iterable[str],
    failures: Mapping[str, tuple[str, str]],
    seconds: float,
) -> None:
    """Every live job of one micro-batch ended: `failures` maps job id to (error type, message)."""
    name = model.partition(":")[0]
    for job_id in succeeded:
        job_ended(job_id, name, version, sizes.get(job_id, 0), seconds)
    for job_id, (error_type, _message) in failures.items():
        job_ended(job_id, name, version, sizes.get(job_id, 0), seconds, error_type)


def chunk_ended(
    job_id: str, model: str, index: int, n_rows: int, status: str, error_type: str = ""
) -> None:
    """A chunk of a CSV job was scored (`status`: the job's, "succeeded" after its last chunk),
    or failed the job with `error_type`."""
    name, _sep, version = model.partition(":")
    ended_badly = bool(error_type) or status == "failed"
    metrics.observe_rows(name, version, "failed" if ended_badly else "succeeded", n_rows)
    if not ended_badly and status != "succeeded":
        return
    metrics.observe_job(name, version, "failed" if ended_badly else "succeeded", 0, None)
    extra = {"job_id": job_id, "model": name, "version": version or None, "chunk": index}
    if ended_badly:
        failed("job", error_type or "InvalidInput", name, extra)
    else:
        log.info("job succeeded", extra=extra)
