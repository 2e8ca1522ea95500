"""The body of `mlqueue.score_chunk`: score one stored chunk of a CSV job, exactly once in effect.

Free of Celery so that it can be called and tested directly. Every write is conditional on the
job being live and keyed by the chunk's index (`shared.csvjobs`), so a redelivered chunk, a
cancelled job or a job that another chunk failed cannot leave rows twice or data behind.
"""

from __future__ import annotations

import logging
import time
from typing import Unpack

import numpy as np
import orjson

from shared import csvjobs, tracing
from shared.csvformat import MAX_REPORTED, describe
from shared.csvjobs import ChunkOutcome
from shared.errors import InvalidInput
from shared.jobstore import TOO_MANY_ATTEMPTS
from shared.tasks import ScoreChunkKwargs
from worker import metrics, observe
from worker.chunk_store import ChunkRecorder
from worker.csv_parse import parse_chunk
from worker.failures import PredictionFailed, classify, reraise
from worker.runtime import Runtime

log = logging.getLogger(__name__)


def score_chunk(rt: Runtime, **message: Unpack[ScoreChunkKwargs]) -> str:
    """Score chunk `index` of job `job_id`, as `message` (`shared.tasks`) says."""
    job_id, index = message["job_id"], message["index"]
    chunks = ChunkRecorder(
        rt.jobs.redis, rt.settings.result_ttl, rt.settings.max_attempts, rt.jobs.wait
    )
    data, status = _claim(chunks, job_id, index)
    if data is None:
        return status
    started = time.perf_counter()
    try:
        status = _score(rt, chunks, data, message)
    except Exception as exc:
        return _failed(chunks, exc, message)
    log.info(
        "chunk scored",
        extra={
            "job_id": job_id,
            "chunk": index,
            "rows": message["rows"],
            "status": status,
            "duration_ms": round(1000 * (time.perf_counter() - started), 2),
        },
    )
    return status


def _claim(chunks: ChunkRecorder, job_id: str, index: int) -> tuple[bytes | None, str]:
    """The chunk's data once begun, or None and the status that says why it is not scored."""
    status = chunks.begin(job_id, index)
    if status == "exhausted":  # its result could never be stored: stop redelivering it
        message = (
            f"chunk {index} was started {chunks.max_attempts} times and its result never stored "
            "(a worker or Redis failed each time); giving up"
        )
        chunks.fail(job_id, TOO_MANY_ATTEMPTS, message, [])
        return None, "failed"
    data = chunks.data(job_id, index) if status == "running" else None
    if data is None:
        if status == "running":
            # Scored meanwhile by a twin delivery, or cancelled: ask again before calling it lost.
            status = chunks.begin(job_id, index)
            if status == "running":
                chunks.fail(job_id, "ChunkLost", f"chunk {index}: its data expired", [])
                return None, "failed"
        log.info("chunk skipped", extra={"job_id": job_id, "chunk": index, "status": status})
    return data, status


def _failed(chunks: ChunkRecorder, exc: Exception, message: ScoreChunkKwargs) -> str:
    """Fail the chunk's job for `exc`; "failed" for bad lines, else the task raises."""
    job_id, index = message["job_id"], message["index"]
    failure = classify(exc, context=f"chunk {index}")
    if failure.retryable:
        raise exc  # `worker.requeue` hands the message back; scoring a chunk again is safe
    bad_lines = exc.details.get("errors", []) if isinstance(exc, InvalidInput) else None
    chunks.fail(job_id, *failure.stored, bad_lines or [])
    if bad_lines is None:
        reraise(exc, failure)
    # The file's fault, not the worker's: the job failed cleanly and the task succeeds.
    extra = {"job_id": job_id, "chunk": index}
    observe.failed("chunk", failure.type, message["model"], extra, counted=False)
    return "failed"


def _score(
    rt: Runtime, chunks: ChunkRecorder, data: bytes, message: ScoreChunkKwargs
) -> ChunkOutcome:
    job_id, index, rows = message["job_id"], message["index"], message["rows"]
    info, loaded = rt.models.get(message["model"])
    layout = csvjobs.layout_from(message["layout"])
    parsed = parse_chunk(data, message["first_line"], layout, rows)
    if parsed.errors and message["on_error"] != "skip":
        raise InvalidInput(describe(parsed.errors), errors=parsed.errors[:MAX_REPORTED])
    predict_started = time.perf_counter()
    attributes: tracing.Attributes = {
        tracing.MODEL: info.name,
        tracing.VERSION: info.version,
        tracing.ROWS: rows,
    }
    with tracing.span("mlqueue.predict", {**attributes, tracing.CHUNK: index}):
        predictions = loaded.predict(parsed.X) if len(parsed.X) else np.empty(0)
    seconds = time.perf_counter() - predict_started
    metrics.observe_predict(info.name, info.version, len(parsed.X), seconds)
    if len(predictions) != len(parsed.X):
        raise PredictionFailed(f"the model returned {len(predictions)} values for {len(parsed.X)}")
    raw = np.asarray(predictions, dtype="<f8").tobytes()
    ids = orjson.dumps(parsed.ids) if parsed.ids is not None else b""
    report = parsed.errors[: csvjobs.MAX_SKIP_REPORT]
    with tracing.span("mlqueue.store", {tracing.JOB_ID: job_id, tracing.CHUNK: index}):
        return chunks.done(job_id, index, rows, raw, ids, orjson.dumps(report) if report else b"")
