"""The worker's side of the job store (see `shared.jobstore`), over a synchronous Redis client."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import orjson
from redis import Redis

from shared import jobstore


class JobRecorder:
    """Moves job records to running and to their final state."""

    def __init__(self, redis: Redis, ttl: int) -> None:
        self.redis = redis
        self.ttl = ttl
        self._start = redis.register_script(jobstore.START)
        self._finish = redis.register_script(jobstore.FINISH)

    def start(self, job_id: str, model: str, n_rows: int) -> str:
        """Mark the job running (recording a direct task first); returns the status to act on."""
        args = jobstore.start_args(job_id, model, n_rows, self.ttl)
        return _str(self._start(keys=[jobstore.job_key(job_id), jobstore.PENDING], args=args))

    def start_many(self, jobs: Sequence[tuple[str, int]], model: str) -> list[str]:
        """`start` for (job id, rows) pairs in one round trip; statuses in the same order."""
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id, n_rows in jobs:
                args = jobstore.start_args(job_id, model, n_rows, self.ttl)
                keys = [jobstore.job_key(job_id), jobstore.PENDING]
                self._start(keys=keys, args=args, client=pipe)
            return [_str(s) for s in pipe.execute()]

    def succeed(self, job_id: str, version: str, predictions: list[float]) -> str:
        """Store the predictions unless the job already ended; returns the final status."""
        args = jobstore.success_args(version, predictions, self.ttl)
        return _str(self._finish(keys=[jobstore.job_key(job_id)], args=args))

    def fail(self, job_id: str, error_type: str, message: str) -> str:
        """Store the error unless the job already ended; returns the final status."""
        args = jobstore.failure_args(error_type, message, self.ttl)
        return _str(self._finish(keys=[jobstore.job_key(job_id)], args=args))

    def finish_many(
        self,
        version: str,
        succeeded: Mapping[str, list[float]],
        failed: Mapping[str, tuple[str, str]],
    ) -> None:
        """Store predictions and (error type, message) pairs in one trip, then wake waiters."""
        if not succeeded and not failed:
            return
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id, predictions in succeeded.items():
                args = jobstore.success_args(version, predictions, self.ttl, publish=False)
                self._finish(keys=[jobstore.job_key(job_id)], args=args, client=pipe)
            for job_id, (error_type, message) in failed.items():
                args = jobstore.failure_args(error_type, message, self.ttl, publish=False)
                self._finish(keys=[jobstore.job_key(job_id)], args=args, client=pipe)
            pipe.publish(jobstore.EVENTS, "\n".join([*succeeded, *failed]))
            pipe.execute()

    def stored(self, job_id: str) -> tuple[str | None, list[float] | None, str | None]:
        """The (version, predictions, error) already stored for a job."""
        version, result, error = self.redis.hmget(
            jobstore.job_key(job_id), ["version", "result", "error"]
        )
        return (
            _str(version) if version else None,
            orjson.loads(result) if result else None,
            _str(error) if error else None,
        )


def _str(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
