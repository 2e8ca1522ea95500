"""Sends again the messages the broker lost: gateway jobs and CSV chunks that never began.

kombu's Redis transport pops a message and only then records it as unacknowledged, in a second
command (and from the worker's side of the connection): if Redis dies, or the worker is killed,
between the two, the message is gone and its job would wait until it expires. So the gateway
keeps what it takes to send a message again until a worker begins it: a JSON job's rows in its
record (outbox `shared.jobstore.PENDING`), a CSV chunk's task arguments beside its data (outbox
`shared.csvjobs.PENDING_CHUNKS`). This sweep re-sends what has waited far longer than any message
can legitimately stay unacknowledged, to the queue of the job's priority. It only acts when every
queue is empty, so work that is merely waiting behind a backlog is not sent twice, except just
after a worker node died (`worker.failover`): then what was sent before the death goes again at
once, backlog or not. Anything sent twice is harmless, because a started job or a scored chunk is
skipped (final states are sticky).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from redis import Redis

from shared import csvjobs, jobstore
from shared.redisio import text
from shared.tasks import (
    PREDICT_BATCH,
    QUEUES,
    SCORE_CHUNK,
    BatchJob,
    PredictBatchKwargs,
    ScoreChunkKwargs,
    queue_for,
)

log = logging.getLogger(__name__)
LOCK = f"{jobstore.PREFIX}:resend-lock"
MAX_PER_SWEEP = 500

Send = Callable[[str, str, Mapping[str, Any], str], None]  # task name, message id, kwargs, queue


class Resender:
    """One sweep of the outboxes; called periodically by every worker, run by one at a time."""

    def __init__(self, redis: Redis, send: Send, grace: float, interval: float) -> None:
        self.redis = redis
        self.send = send
        self.grace = grace  # longer than any message can legitimately be unacknowledged
        self.interval = interval

    def sweep(self, before: float | None = None) -> int:
        """Re-send lost messages; returns how many jobs and chunks were sent again.

        `before`: a worker node died then (`worker.failover`), so what was sent before it and is
        neither queued nor started may have died with it: it counts as lost without the grace.
        """
        lock_seconds = max(1, round(self.interval))
        if not self.redis.set(LOCK, "1", nx=True, ex=lock_seconds):
            return 0  # another worker swept just now
        cutoff = max(time.time() - self.grace, before or 0.0)
        if any(self.redis.llen(queue) for queue in QUEUES):
            if before is None:
                return 0  # what is pending may just be waiting behind these messages
            # A node died: what it popped but had not recorded is in no list, and waiting for
            # the queues to drain would hold its jobs back for as long as the backlog lasts.
            # Only what was sent before the death goes again, once (it is re-armed below); a
            # copy of a job that was merely waiting finds it done and is skipped.
            cutoff = before
        resent = self._jobs(cutoff) + self._chunks(cutoff)
        if resent:
            log.warning("re-sent messages the broker lost", extra={"messages": resent})
        return resent

    def _jobs(self, cutoff: float) -> int:
        batches: defaultdict[tuple[str, str], list[BatchJob]] = defaultdict(list)
        for job_id in self._stale(jobstore.PENDING, cutoff):
            status, spec, rows, priority = self.redis.hmget(
                jobstore.job_key(job_id), ["status", "spec", "rows", "priority"]
            )
            if status != b"queued" or not spec or not rows:
                self.redis.zrem(jobstore.PENDING, job_id)  # started, cancelled or expired
                continue
            key = (text(spec), text(priority) or "normal")
            batches[key].append({"id": job_id, "rows": orjson.loads(rows)})
        for (spec, priority), jobs in batches.items():
            message: PredictBatchKwargs = {"jobs": jobs, "model": spec}
            self.send(PREDICT_BATCH, str(uuid.uuid4()), message, queue_for(priority))
            self.redis.zadd(jobstore.PENDING, {job["id"]: time.time() for job in jobs})
        return sum(len(jobs) for jobs in batches.values())

    def _chunks(self, cutoff: float) -> int:
        resent = 0
        for member in self._stale(csvjobs.PENDING_CHUNKS, cutoff):
            job_id, _, index = member.rpartition(":")
            status, priority = self.redis.hmget(jobstore.job_key(job_id), ["status", "priority"])
            kwargs = self.redis.get(csvjobs.msg_key(job_id, int(index)))
            if status not in (b"queued", b"running") or not kwargs:
                self.redis.zrem(csvjobs.PENDING_CHUNKS, member)  # begun, ended or expired
                continue
            message: ScoreChunkKwargs = orjson.loads(kwargs)  # as the gateway stored it
            self.send(
                SCORE_CHUNK, f"{job_id}.{index}", message, queue_for(text(priority) or "normal")
            )
            self.redis.zadd(csvjobs.PENDING_CHUNKS, {member: time.time()})
            resent += 1
        return resent

    def _stale(self, outbox: str, cutoff: float) -> list[str]:
        members = self.redis.zrangebyscore(outbox, "-inf", cutoff, 0, MAX_PER_SWEEP)
        return [text(m) for m in members]
