"""The slow safety net under every job: a job `running` for longer than any run can take is
sent again, or failed with a clear error; none stays `running` until it expires.

A job's outcome can be lost after its message was acknowledged: a worker whose Redis refused the
write in a way nothing handed back, a process killed between the two. Its record then says
`running` with nobody running it. This sweep (run by one worker at a time, from the heartbeat)
looks at jobs and CSV chunks begun longer ago than the hard time limit plus the visibility
timeout plus a grace (`stuck_after`): nothing can still be running them, nor redeliver them. A
JSON job keeps its rows until it ends, so it is sent again; a chunk keeps its data and its task's
arguments until scored, so it is sent again too. Every start counts as an attempt on the job's
record: after `max_attempts` the job fails with `TooManyAttempts`. A job with nothing to send
(a task enqueued directly keeps no rows) fails with `JobLost`, which a client can retry.
"""

from __future__ import annotations

import logging
import time
import uuid

import orjson
from redis import Redis

from shared import csvjobs, jobstore
from shared.jobstore import TOO_MANY_ATTEMPTS
from shared.redisio import text
from shared.tasks import (
    PREDICT_BATCH,
    SCORE_CHUNK,
    PredictBatchKwargs,
    ScoreChunkKwargs,
    queue_for,
)
from worker.chunk_store import ChunkRecorder
from worker.jobs import JobRecorder
from worker.resender import MAX_PER_SWEEP, Send

log = logging.getLogger(__name__)
LOCK = f"{jobstore.PREFIX}:reap-lock"
JOB_LOST = "JobLost"


class Reaper:
    """One sweep of the running jobs and chunks; called by every worker, run by one at a time."""

    def __init__(
        self,
        redis: Redis,
        send: Send,
        *,
        stuck_after: float,
        max_attempts: int,
        ttl: int,
        interval: float,
    ) -> None:
        self.redis = redis
        self.send = send
        self.stuck_after = stuck_after
        self.max_attempts = max_attempts
        self.interval = interval
        self.jobs = JobRecorder(redis, ttl, max_attempts)
        self.chunks = ChunkRecorder(redis, ttl, max_attempts)

    def sweep(self) -> int:
        """Send again or fail what is stuck; returns how many jobs and chunks it acted on."""
        if not self.redis.set(LOCK, "1", nx=True, ex=max(1, round(self.interval))):
            return 0  # another worker swept just now
        cutoff = time.time() - self.stuck_after
        return self._jobs(cutoff) + self._chunks(cutoff)

    def _jobs(self, cutoff: float) -> int:
        acted = 0
        for job_id in self._stale(jobstore.RUNNING, cutoff):
            status, spec, rows, attempts, priority = self.redis.hmget(
                jobstore.job_key(job_id), ["status", "spec", "rows", "attempts", "priority"]
            )
            if status != b"running":
                self.redis.zrem(jobstore.RUNNING, job_id)  # ended (or expired) meanwhile
                continue
            acted += 1
            tries = int(attempts or 0)
            if tries >= self.max_attempts:
                self.jobs.fail(job_id, TOO_MANY_ATTEMPTS, _exhausted("job", tries))
            elif not spec or not rows:
                self.jobs.fail(job_id, JOB_LOST, _LOST)
            else:
                message: PredictBatchKwargs = {
                    "jobs": [{"id": job_id, "rows": orjson.loads(rows)}],
                    "model": text(spec),
                }
                queue = queue_for(text(priority) or "normal")  # the job's own priority
                self.send(PREDICT_BATCH, str(uuid.uuid4()), message, queue)
                self.redis.zadd(jobstore.RUNNING, {job_id: time.time()})
                _log("re-sent a job stuck running", job_id, tries)
        return acted

    def _chunks(self, cutoff: float) -> int:
        acted = 0
        for member in self._stale(csvjobs.RUNNING_CHUNKS, cutoff):
            job_id, _, index = member.rpartition(":")
            key = jobstore.job_key(job_id)
            status, attempts, priority = self.redis.hmget(
                key, ["status", f"attempts:{index}", "priority"]
            )
            scored = self.redis.sismember(csvjobs.done_key(job_id), index)
            if status not in (b"queued", b"running") or scored:
                self.redis.zrem(csvjobs.RUNNING_CHUNKS, member)
                continue
            acted += 1
            tries = int(attempts or 0)
            kwargs = self.redis.get(csvjobs.msg_key(job_id, int(index)))
            if tries >= self.max_attempts:
                self.chunks.fail(job_id, TOO_MANY_ATTEMPTS, _exhausted(f"chunk {index}", tries), [])
            elif not kwargs:
                self.chunks.fail(job_id, "ChunkLost", f"chunk {index}: {_LOST}", [])
            else:
                message: ScoreChunkKwargs = orjson.loads(kwargs)
                queue = queue_for(text(priority) or "normal")
                self.send(SCORE_CHUNK, f"{job_id}.{index}", message, queue)
                self.redis.zadd(csvjobs.RUNNING_CHUNKS, {member: time.time()})
                _log("re-sent a chunk stuck running", job_id, tries, chunk=int(index))
            if tries >= self.max_attempts or not kwargs:
                self.redis.zrem(csvjobs.RUNNING_CHUNKS, member)
        return acted

    def _stale(self, watched: str, cutoff: float) -> list[str]:
        members = self.redis.zrangebyscore(watched, "-inf", cutoff, 0, MAX_PER_SWEEP)
        return [text(m) for m in members]


_LOST = (
    "its worker or Redis failed while it ran, and it cannot be sent again (nothing to send); "
    "submit it again"
)


def _exhausted(what: str, tries: int) -> str:
    return (
        f"the {what} was started {tries} times and its outcome never stored (a worker or Redis "
        "failed each time); giving up"
    )


def _log(event: str, job_id: str, tries: int, **extra: int) -> None:
    log.warning(event, extra={"job_id": job_id, "attempts": tries, **extra})
