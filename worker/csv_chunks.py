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
from redis import Redis

from shared import csvjobs, jobstore
from shared.csvformat import MAX_REPORTED, describe
from shared.errors import InvalidInput, ServiceError
from worker import metrics
from worker.csv_parse import parse_chunk
from worker.predict import PredictionFailed
from worker.runtime import Runtime

log = logging.getLogger(__name__)
PURGE_BATCH = 500


class ChunkRecorder:
    """The worker's side of a CSV job's chunk keys."""

    def __init__(self, redis: Redis, ttl: int) -> None:
        self.redis = redis
        self.ttl = ttl
        self._begin = redis.register_script(csvjobs.CHUNK_BEGIN)
        self._done = redis.register_script(csvjobs.CHUNK_DONE)
        self._finish = redis.register_script(jobstore.FINISH)

    def begin(self, job_id: str, index: int) -> str:
        """ "running" to score the chunk, "done" if it was scored, else the job's status."""
        keys = [
            jobstore.job_key(job_id),
            csvjobs.done_key(job_id),
            csvjobs.msg_key(job_id, index),
            csvjobs.PENDING_CHUNKS,
        ]
        args: list[str | int] = [index, repr(time.time()), csvjobs.pending_member(job_id, index)]
        return _str(self._begin(keys=keys, args=args))

    def data(self, job_id: str, index: int) -> bytes | None:
        """The chunk's raw bytes (None once scored, purged or expired)."""
        value = self.redis.get(csvjobs.in_key(job_id, index))
        return value if isinstance(value, bytes) or value is None else value.encode()

    def done(
        self, job_id: str, index: int, rows: int, predictions: bytes, ids: bytes, errors: bytes
    ) -> str:
        """Record the chunk's results once; returns the job's status (or "duplicate")."""
        scored = len(predictions) // 8
        keys = [
            jobstore.job_key(job_id),
            csvjobs.done_key(job_id),
            csvjobs.in_key(job_id, index),
            csvjobs.out_key(job_id, index),
            csvjobs.ids_key(job_id, index),
            csvjobs.err_key(job_id, index),
        ]
        args: list[str | bytes | int] = [
            index,
            rows,
            scored,
            rows - scored,
            predictions,
            ids,
            errors,
            self.ttl,
            repr(time.time()),
            jobstore.EVENTS,
            jobstore.job_key(""),
        ]
        return _str(self._done(keys=keys, args=args))

    def fail(self, job_id: str, error_type: str, message: str, errors: list[Any]) -> None:
        """Fail the whole job (unless it already ended) and delete its chunk data."""
        args = jobstore.failure_args(error_type, message, self.ttl)
        if errors:
            args += ["errors", orjson.dumps(errors)]
        self._finish(keys=[jobstore.job_key(job_id)], args=args)
        self.purge(job_id)

    def purge(self, job_id: str) -> None:
        """Delete every chunk key of a job that has ended."""
        sent = self.redis.hget(jobstore.job_key(job_id), "chunks_sent")
        keys = csvjobs.chunk_keys(job_id, int(sent or 0))
        for i in range(0, len(keys), PURGE_BATCH):
            self.redis.delete(*keys[i : i + PURGE_BATCH])


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
) -> str:
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


def _str(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
