"""`GET /v1/jobs`: an owner's jobs, newest first, a page at a time, never all in memory.

Each owner has a sorted set (job id -> creation time, `shared.jobstore.owner_index_key`) written
in the submit's own pipeline. A page walks that set backwards from the cursor in windows, reads
the records of one window in one round trip, and keeps those that match the filters. Entries
whose record has expired are skipped (and trimmed by age), so the index never outlives its TTL.
A page scans at most `MAX_SCANNED` entries: a rare filter returns a short page with a cursor,
rather than an unbounded request.
"""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass
from typing import cast

from redis.asyncio import Redis

from shared import jobstore
from shared.errors import InvalidInput
from shared.redisio import text
from shared.schemas import JobPage, JobStatus, JobView

MAX_SCANNED = 1000
WINDOW = 100


@dataclass(frozen=True)
class Cursor:
    """Where the previous page ended: the creation time and id of its last entry."""

    created: float
    job_id: str

    def encode(self) -> str:
        """Opaque to clients: url-safe base64 of `<time>|<id>`."""
        raw = f"{self.created!r}|{self.job_id}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, value: str) -> Cursor:
        """The cursor a previous page returned; `InvalidInput` for anything else."""
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
            created, job_id = raw.split("|", 1)
            cursor = cls(float(created), job_id)
        except (ValueError, UnicodeDecodeError, binascii.Error) as exc:
            raise InvalidInput("cursor: not a next_cursor returned by GET /v1/jobs") from exc
        if not job_id or cursor.created != cursor.created:  # NaN
            raise InvalidInput("cursor: not a next_cursor returned by GET /v1/jobs")
        return cursor


class JobListing:
    """Pages over the per-owner index of jobs."""

    def __init__(self, redis: Redis, ttl: int) -> None:
        self.redis = redis
        self.ttl = ttl

    async def page(
        self,
        owner: str,
        limit: int,
        cursor: str | None = None,
        status: JobStatus | None = None,
        kind: str | None = None,
    ) -> JobPage:
        """Up to `limit` of `owner`'s jobs older than `cursor`, newest first, filtered."""
        key = jobstore.owner_index_key(owner)
        after = Cursor.decode(cursor) if cursor else None
        # Forget entries older than any record can be (their records expired with them).
        await self.redis.zremrangebyscore(key, "-inf", f"({time.time() - self.ttl!r}")
        found: list[JobView] = []
        scanned = 0
        last: Cursor | None = after
        exhausted = False
        while len(found) < limit and scanned < MAX_SCANNED:
            entries = await self._window(key, last)
            if not entries:
                exhausted = True
                break
            views = await self._views(entries)
            for (job_id, created), view in zip(entries, views, strict=True):
                scanned += 1
                last = Cursor(created, job_id)
                if view is not None and _matches(view, status, kind):
                    found.append(view)
                    if len(found) == limit:
                        break
        # A full page (or a spent scan budget) gets a cursor only if older entries remain.
        if exhausted or last is None or not await self._more(key, last):
            return JobPage(jobs=found, next_cursor=None)
        return JobPage(jobs=found, next_cursor=last.encode())

    async def _window(self, key: str, after: Cursor | None) -> list[tuple[str, float]]:
        """The next entries older than `after` (ties in time ordered by id, as Redis does)."""
        top = "+inf" if after is None else repr(after.created)
        # Entries tied with the cursor's time come first in the reply; fetch past them.
        ties = 0 if after is None else await self.redis.zcount(key, top, top)
        reply = await self.redis.zrevrangebyscore(
            key, top, "-inf", start=0, num=WINDOW + ties, withscores=True
        )
        pairs = cast(list[tuple[bytes, float]], reply)  # withscores=True: (member, score)
        entries = [(text(member), float(score)) for member, score in pairs]
        if after is not None:
            entries = [e for e in entries if _older(e, after)]
        return entries[:WINDOW]

    async def _more(self, key: str, last: Cursor) -> bool:
        return bool(await self._window(key, last))

    async def _views(self, entries: list[tuple[str, float]]) -> list[JobView | None]:
        names = jobstore.VIEW_FIELDS
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id, _ in entries:
                pipe.hmget(jobstore.job_key(job_id), list(names))
            replies = await pipe.execute()
        views: list[JobView | None] = []
        for (job_id, _), values in zip(entries, replies, strict=True):
            fields = dict(zip(names, values, strict=True))
            views.append(None if fields["status"] is None else jobstore.to_view(job_id, fields))
        return views


def _older(entry: tuple[str, float], cursor: Cursor) -> bool:
    job_id, created = entry
    return created < cursor.created or (created == cursor.created and job_id < cursor.job_id)


def _matches(view: JobView, status: JobStatus | None, kind: str | None) -> bool:
    return (status is None or view.status is status) and (kind is None or view.kind == kind)
