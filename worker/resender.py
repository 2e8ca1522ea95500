"""Sends again the gateway jobs whose broker message was lost.

kombu's Redis transport pops a message and only then records it as unacknowledged, in a second
command: if Redis dies between the two, the message is gone and its job would stay `queued`
until it expires. The gateway keeps each job's rows in its record until a worker starts it (the
outbox, `shared.jobstore.PENDING`); this sweep re-sends jobs still queued long after their
message was sent. It only acts when the queue is empty, so a job that is merely waiting behind a
backlog is never sent twice; and a job sent twice anyway is harmless, because a started or
finished job is skipped (final states are sticky).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import orjson
from redis import Redis

from shared import jobstore
from shared.tasks import QUEUE

log = logging.getLogger(__name__)
LOCK = f"{jobstore.PREFIX}:resend-lock"
MAX_PER_SWEEP = 500

Send = Callable[[str, dict[str, Any]], None]


class Resender:
    """One sweep of the outbox; called periodically by every worker, run by one at a time."""

    def __init__(self, redis: Redis, send: Send, grace: float, interval: float) -> None:
        self.redis = redis
        self.send = send
        self.grace = grace  # longer than any message can legitimately be unacknowledged
        self.interval = interval

    def sweep(self) -> int:
        """Re-send lost jobs; returns how many were sent again."""
        lock_seconds = max(1, round(self.interval))
        if not self.redis.set(LOCK, "1", nx=True, ex=lock_seconds):
            return 0  # another worker swept just now
        if self.redis.llen(QUEUE):
            return 0  # a queued job may just be waiting behind these messages
        cutoff = time.time() - self.grace
        stale = self.redis.zrangebyscore(jobstore.PENDING, "-inf", cutoff, 0, MAX_PER_SWEEP)
        batches: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
        for raw_id in stale:
            job_id = _text(raw_id)
            status, spec, rows = self.redis.hmget(
                jobstore.job_key(job_id), ["status", "spec", "rows"]
            )
            if status != b"queued" or not spec or not rows:
                self.redis.zrem(jobstore.PENDING, job_id)  # started, cancelled or expired
                continue
            batches[_text(spec)].append({"id": job_id, "rows": orjson.loads(rows)})
        for spec, jobs in batches.items():
            self.send(str(uuid.uuid4()), {"jobs": jobs, "model": spec})
            self.redis.zadd(jobstore.PENDING, {job["id"]: time.time() for job in jobs})
        resent = sum(len(jobs) for jobs in batches.values())
        if resent:
            log.warning("re-sent jobs whose message was lost", extra={"jobs": resent})
        return resent


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
