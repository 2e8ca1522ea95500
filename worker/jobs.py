"""The worker's side of the job store (see `shared.jobstore`), over a synchronous Redis client."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
from redis import Redis
from redis.client import Pipeline
from redis.exceptions import NoScriptError

from shared import jobstore
from shared.redisio import ScriptCall, text
from shared.replication import ReplicaWait, run_script
from shared.schemas import JobStatus


class JobRecorder:
    """Moves job records to running and to their final state."""

    def __init__(
        self, redis: Redis, ttl: int, max_attempts: int, wait: ReplicaWait | None = None
    ) -> None:
        self.redis = redis
        self.ttl = ttl
        self.max_attempts = max_attempts
        # Sentinel: an outcome counts as stored (and its message may be acked) once replicated.
        self.wait = wait
        self._start = redis.register_script(jobstore.START)
        self._finish = redis.register_script(jobstore.FINISH)
        self._start_many = redis.register_script(jobstore.START_MANY)
        self._finish_many = redis.register_script(jobstore.FINISH_MANY)

    def start(self, job_id: str, model: str, n_rows: int) -> JobStatus:
        """Mark the job running (recording a direct task first); returns the status to act on."""
        call = self._start_call(job_id, model, n_rows)
        return jobstore.status_of(self._start(keys=call.keys, args=call.args))

    def start_many(self, jobs: Sequence[tuple[str, int]], model: str) -> list[JobStatus]:
        """`start` for the (job id, rows) pairs of one batch message in one script call;
        statuses in the same order."""
        call = jobstore.start_many_call(
            jobs, model=model, ttl=self.ttl, max_attempts=self.max_attempts
        )
        return jobstore.statuses_of(self._start_many(keys=call.keys, args=call.args))

    def succeed(self, job_id: str, version: str, predictions: list[float]) -> JobStatus:
        """Store the predictions unless the job already ended; returns the final status."""
        call = jobstore.success_call(job_id, version=version, predictions=predictions, ttl=self.ttl)
        return self._run(call)

    def fail(self, job_id: str, error_type: str, message: str, errors: bytes = b"") -> JobStatus:
        """Store the error unless the job already ended; returns the final status."""
        call = jobstore.failure_call(
            job_id, error_type=error_type, message=message, ttl=self.ttl, errors=errors
        )
        return self._run(call)

    def finish_many(
        self,
        version: str,
        succeeded: Mapping[str, list[float]],
        failed: Mapping[str, tuple[str, str]],
    ) -> None:
        """Store predictions and (error type, message) pairs in one trip, then wake waiters
        (small answers travel with the wake-up, see `jobstore.Announced`); `NotReplicated`
        (the message is handed back) if no replica confirmed them in time."""
        if not succeeded and not failed:
            return
        results = {job_id: orjson.dumps(p) for job_id, p in succeeded.items()}
        # With replicas to wait for, waiters wake after the WAIT: what they are told or read is
        # then on a replica too. Without, the script publishes: no round trip more.
        call = jobstore.finish_many_call(
            version, results, failed, ttl=self.ttl, publish=self.wait is None
        )

        def queue(pipe: Pipeline) -> None:
            pipe.evalsha(self._finish_many.sha, len(call.keys), *call.keys, *call.args)
            if self.wait is not None:
                self.wait.queue(pipe)

        replies = self._pipeline(queue)
        if self.wait is not None:
            self.wait.check(replies[-1], f"results of {len(call.keys) - 1} job(s)")
            self.redis.publish(jobstore.EVENTS, jobstore.finished_message(replies[0]))

    def stored(self, job_id: str) -> tuple[str | None, list[float] | None, str | None]:
        """The (version, predictions, error) already stored for a job."""
        version, result, error = self.redis.hmget(
            jobstore.job_key(job_id), ["version", "result", "error"]
        )
        return (
            text(version) if version else None,
            orjson.loads(result) if result else None,
            text(error) if error else None,
        )

    def _pipeline(self, queue: Callable[[Pipeline], None]) -> list[Any]:
        """Run the commands `queue` adds, in one round trip. The script goes as a bare EVALSHA:
        a pipeline holding `Script` objects first asks Redis whether it knows them (SCRIPT
        EXISTS), one more round trip per batch; a Redis that lost it (a restart, a promoted
        replica) gets it loaded and the pipeline sent once more (a FINISH that did not run
        changed nothing, and waiters tolerate a second wake-up)."""
        try:
            return self._send(queue)
        except NoScriptError:
            self._finish_many.sha = self.redis.script_load(self._finish_many.script)
            return self._send(queue)

    def _send(self, queue: Callable[[Pipeline], None]) -> list[Any]:
        with self.redis.pipeline(transaction=False) as pipe:
            queue(pipe)
            return pipe.execute()

    def _start_call(self, job_id: str, model: str, n_rows: int) -> ScriptCall:
        return jobstore.start_call(
            job_id, model=model, n_rows=n_rows, ttl=self.ttl, max_attempts=self.max_attempts
        )

    def _run(self, call: ScriptCall) -> JobStatus:
        reply = run_script(self.redis, self.wait, self._finish, call, f"job {call.keys[0]}")
        return jobstore.status_of(reply)
