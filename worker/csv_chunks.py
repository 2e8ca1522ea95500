"""The body of `mlqueue.score_chunk`: score one stored chunk of a CSV job, exactly once in effect.

Free of Celery so that it can be called and tested directly. Every write is conditional on the
job being live and keyed by the chunk's index (`shared.csvjobs`), so a redelivered chunk, a
cancelled job or a job that another chunk failed cannot leave rows twice or data behind.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import orjson
from celery.exceptions import SoftTimeLimitExceeded

from shared import csvjobs
from shared.csvformat import MAX_REPORTED, describe
from shared.csvjobs import ChunkOutcome
from shared.errors import InvalidInput, ServiceError
from worker import metrics
from worker.chunk_store import ChunkRecorder
from worker.csv_parse import parse_chunk
from worker.predict import PredictionFailed
from worker.runtime import Runtime

log = logging.getLogger(__name__)


def score_chunk(rt: Runtime, job_id: str, index: int, **kwargs: Any) -> str:
    """Score chunk `index` of job `job_id` (kwargs as in `shared.csvjobs.task_kwargs`)."""
    chunks = ChunkRecorder(rt.jobs.redis, rt.settings.result_ttl)
    status = chunks.begin(job_id, index)
    data = chunks.data(job_id, index) if status == "running" else None
    if data is None:
        if status == "running":
            # Scored meanwhile by a twin delivery, or cancelled: ask again before calling it lost.
            status = chunks.begin(job_id, index)
            if status == "running":
                chunks.fail(job_id, "ChunkLost", f"chunk {index}: its data expired", [])
                return "failed"
        log.info("chunk skipped", extra={"job_id": job_id, "chunk": index, "status": status})
        return status
    started = time.perf_counter()
    try:
        status = _score(rt, chunks, job_id, index, data, **kwargs)
    except InvalidInput as exc:
        chunks.fail(job_id, "InvalidInput", exc.message, exc.details.get("errors", []))
        log.warning("chunk failed", extra={"job_id": job_id, "chunk": index, "error": exc.message})
        return "failed"
    except ServiceError as exc:
        chunks.fail(job_id, type(exc).__name__, exc.message, [])
        raise
    except SoftTimeLimitExceeded:
        chunks.fail(job_id, "TimeLimitExceeded", f"chunk {index} exceeded its time limit", [])
        raise
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}"
        chunks.fail(job_id, PredictionFailed.__name__, message, [])
        raise PredictionFailed(message) from exc
    log.info(
        "chunk scored",
        extra={
            "job_id": job_id,
            "chunk": index,
            "rows": kwargs.get("rows"),
            "status": status,
            "duration_ms": round(1000 * (time.perf_counter() - started), 2),
        },
    )
    return status


def _score(
    rt: Runtime,
    chunks: ChunkRecorder,
    job_id: str,
    index: int,
    data: bytes,
    *,
    first_line: int,
    rows: int,
    model: str,
    layout: dict[str, Any],
    on_error: str,
) -> ChunkOutcome:
    info, loaded = rt.models.get(model)
    parsed = parse_chunk(data, first_line, csvjobs.layout_from(layout), rows)
    if parsed.errors and on_error != "skip":
        raise InvalidInput(describe(parsed.errors), errors=parsed.errors[:MAX_REPORTED])
    predict_started = time.perf_counter()
    predictions = loaded.predict(parsed.X) if len(parsed.X) else np.empty(0)
    seconds = time.perf_counter() - predict_started
    metrics.observe_predict(info.name, info.version, len(parsed.X), seconds)
    if len(predictions) != len(parsed.X):
        raise PredictionFailed(f"the model returned {len(predictions)} values for {len(parsed.X)}")
    raw = np.asarray(predictions, dtype="<f8").tobytes()
    ids = orjson.dumps(parsed.ids) if parsed.ids is not None else b""
    report = parsed.errors[: csvjobs.MAX_SKIP_REPORT]
    return chunks.done(job_id, index, rows, raw, ids, orjson.dumps(report) if report else b"")
