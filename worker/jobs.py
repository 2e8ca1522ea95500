"""The worker's side of the job store (see `shared.jobstore`), over a synchronous Redis client."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
from redis import Redis
from redis.client import Pipeline
from redis.commands.core import Script
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

    def start(self, job_id: str, model: str, n_rows: int) -> JobStatus:
        """Mark the job running (recording a direct task first); returns the status to act on."""
        call = self._start_call(job_id, model, n_rows)
        return jobstore.status_of(self._start(keys=call.keys, args=call.args))

    def start_many(self, jobs: Sequence[tuple[str, int]], model: str) -> list[JobStatus]:
        """`start` for (job id, rows) pairs in one round trip; statuses in the same order."""

        def queue(pipe: Pipeline) -> None:
            for job_id, n_rows in jobs:
                _evalsha(pipe, self._start, self._start_call(job_id, model, n_rows))

        return [jobstore.status_of(s) for s in self._pipeline(queue)]

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
        """Store predictions and (error type, message) pairs in one trip, then wake waiters;
        `NotReplicated` (the message is handed back) if no replica confirmed them in time."""
        if not succeeded and not failed:
            return
        calls = [
            jobstore.success_call(
                job_id, version=version, predictions=predictions, ttl=self.ttl, publish=False
            )
            for job_id, predictions in succeeded.items()
        ]
        calls += [
            jobstore.failure_call(
                job_id, error_type=error_type, message=message, ttl=self.ttl, publish=False
            )
            for job_id, (error_type, message) in failed.items()
        ]

        def queue(pipe: Pipeline) -> None:
            for call in calls:
                _evalsha(pipe, self._finish, call)
            if self.wait is not None:
                self.wait.queue(pipe)
            # Waiters wake after the WAIT: what they read is then on a replica too.
            pipe.publish(jobstore.EVENTS, "\n".join([*succeeded, *failed]))

        replies = self._pipeline(queue)
        if self.wait is not None:
            self.wait.check(replies[-2], f"results of {len(calls)} job(s)")

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
        """Run the commands `queue` adds, in one round trip. Scripts go as bare EVALSHA: a
        pipeline holding `Script` objects first asks Redis whether it knows them (SCRIPT
        EXISTS), one more round trip per batch; a Redis that lost them (a restart, a promoted
        replica) gets them loaded and the pipeline sent once more (a FINISH that did not run
        changed nothing, and waiters tolerate a second wake-up)."""
        try:
            return self._send(queue)
        except NoScriptError:
            for script in (self._start, self._finish):
                script.sha = self.redis.script_load(script.script)
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


def _evalsha(pipe: Pipeline, script: Script, call: ScriptCall) -> None:
    pipe.evalsha(script.sha, len(call.keys), *call.keys, *call.args)
