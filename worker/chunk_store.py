"""The worker's side of a CSV job's chunk keys (see `shared.csvjobs`): begin, read, record, fail."""

from __future__ import annotations

import time
from typing import Any

import orjson
from redis import Redis

from shared import csvjobs, jobstore

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


def _str(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
