"""The worker's side of a CSV job's chunk keys (see `shared.csvjobs`): begin, read, record, fail."""

from __future__ import annotations

from typing import Any

import orjson
from redis import Redis

from shared import csvjobs, jobstore
from shared.csvjobs import ChunkOutcome
from shared.redisio import raw
from shared.replication import ReplicaWait, run_script


class ChunkRecorder:
    """The worker's side of a CSV job's chunk keys."""

    def __init__(
        self, redis: Redis, ttl: int, max_attempts: int, wait: ReplicaWait | None = None
    ) -> None:
        self.redis = redis
        self.ttl = ttl
        self.max_attempts = max_attempts
        self.wait = wait  # Sentinel: a chunk's outcome counts once a replica has it
        self._begin = redis.register_script(csvjobs.CHUNK_BEGIN)
        self._done = redis.register_script(csvjobs.CHUNK_DONE)
        self._finish = redis.register_script(jobstore.FINISH)
        self._forget = redis.register_script(csvjobs.FORGET_WAITING)

    def begin(self, job_id: str, index: int) -> ChunkOutcome:
        """RUNNING to score the chunk, "done" if it was scored, "exhausted" if it was begun
        `max_attempts` times already, else the job's status."""
        call = csvjobs.chunk_begin_call(job_id, index, max_attempts=self.max_attempts, ttl=self.ttl)
        return csvjobs.outcome(self._begin(keys=call.keys, args=call.args))

    def data(self, job_id: str, index: int) -> bytes | None:
        """The chunk's raw bytes (None once scored, purged or expired)."""
        value = self.redis.get(csvjobs.in_key(job_id, index))
        return None if value is None else raw(value)

    def done(
        self, job_id: str, index: int, rows: int, predictions: bytes, ids: bytes, errors: bytes
    ) -> ChunkOutcome:
        """Record the chunk's results once; returns the job's status (or "duplicate")."""
        call = csvjobs.chunk_done_call(
            job_id, index, rows=rows, predictions=predictions, ids=ids, errors=errors, ttl=self.ttl
        )
        reply = run_script(self.redis, self.wait, self._done, call, f"job {job_id} chunk {index}")
        return csvjobs.outcome(reply)

    def fail(self, job_id: str, error_type: str, message: str, errors: list[Any]) -> None:
        """Fail the whole job (unless it already ended) and delete its chunk data."""
        call = jobstore.failure_call(
            job_id,
            error_type=error_type,
            message=message,
            ttl=self.ttl,
            errors=orjson.dumps(errors) if errors else b"",
        )
        run_script(self.redis, self.wait, self._finish, call, f"job {job_id}")
        self.purge(job_id)

    def purge(self, job_id: str) -> None:
        """Delete every chunk key of a job that has ended."""
        sent = int(self.redis.hget(jobstore.job_key(job_id), "chunks_sent") or 0)
        forget = csvjobs.forget_waiting_call(job_id, sent)
        self._forget(keys=forget.keys, args=forget.args)
        for keys in csvjobs.purge_batches(job_id, sent):
            self.redis.delete(*keys)
