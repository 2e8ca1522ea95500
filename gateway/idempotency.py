"""Idempotent submit: one `Idempotency-Key` per API key names at most one job.

A request with a key first claims it with an atomic `SET NX` of a short-lived *pending* entry,
so of concurrent requests exactly one goes on to create the job; it then binds the key to the
job's 202 answer for `MLQUEUE_IDEMPOTENCY_TTL`, or releases it if the submit failed (a retry may
try again). Each entry carries a fingerprint of the request: the same key with another body is
refused (422) instead of silently answering for a different job.

A JSON request knows its fingerprint up front; a concurrent duplicate waits (bounded) for the
first to bind and then gets the replay. A CSV upload's fingerprint (the file's sha256 plus the
options) is known only once the whole file was read, so its pending entry has none; a duplicate
upload arriving while the first is still streaming gets 409 with `Retry-After` (it cannot be
compared yet), and one arriving after it is read to the end, compared, and replayed or refused
without creating a job.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from dataclasses import dataclass
from typing import Final

import orjson
from redis.asyncio import Redis

from gateway.autopipe import AutoPipeline
from shared.errors import InvalidInput, RequestInProgress
from shared.jobstore import PREFIX
from shared.schemas import JobAccepted

# RFC 9110 visible ASCII (VCHAR), 1 to 255 of them.
KEY_PATTERN: Final = r"^[\x21-\x7e]{1,255}$"
_KEY = re.compile(KEY_PATTERN)
# A pending entry outlives a gateway that died mid-submit by this long at most; a CSV upload
# refreshes it as it goes.
PENDING_SECONDS: Final = 120
WAIT_SECONDS: Final = 5.0
POLL_SECONDS: Final = 0.05


@dataclass(frozen=True)
class Entry:
    """What a key is bound to: pending (no answer yet) or the job's 202 answer."""

    fingerprint: str
    accepted: JobAccepted | None


def fingerprint(*parts: bytes) -> str:
    """The sha256 of a request's meaningful parts (not its framing)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))  # so that parts cannot run into each other
        digest.update(part)
    return digest.hexdigest()


class Idempotency:
    """Claims, binds and releases idempotency keys in Redis on behalf of an owner."""

    def __init__(self, redis: Redis, ttl: int, commands: AutoPipeline | None = None) -> None:
        self.redis = redis
        self.ttl = ttl
        self.commands = commands or AutoPipeline(redis)  # claims and binds of one turn together

    @staticmethod
    def check(key: str) -> None:
        """`InvalidInput` unless `key` is 1-255 visible ASCII characters."""
        if not _KEY.match(key):
            raise InvalidInput("Idempotency-Key: must be 1-255 visible ASCII characters")

    async def claim(self, owner: str, key: str, fp: str = "") -> Entry | None:
        """None when this request now holds the key (then `bind` or `release` it); otherwise
        the entry found (see `replay`). A JSON request (`fp` given) waits a little for a
        concurrent one with the same key to finish."""
        self.check(key)
        name = _name(owner, key)
        pending = orjson.dumps({"fp": fp})
        waits = round(WAIT_SECONDS / POLL_SECONDS) if fp else 0
        for attempt in range(waits + 2):  # bounded: a key released over and over cannot spin
            if await self.commands.execute("SET", name, pending, "NX", "EX", PENDING_SECONDS):
                return None
            raw = await self.commands.execute("GET", name)
            if raw is None:  # released or expired meanwhile: claim again
                continue
            entry = _entry(raw)
            if entry.accepted is not None or attempt >= waits:
                return entry
            if fp and entry.fingerprint and entry.fingerprint != fp:
                return entry
            await asyncio.sleep(POLL_SECONDS)
        return Entry("", None)  # still contended: reported as in progress

    @staticmethod
    def replay(entry: Entry, fp: str) -> JobAccepted:
        """The original answer for a request with fingerprint `fp`; 422 for another body,
        409 while the first request is still in progress."""
        if entry.fingerprint and entry.fingerprint != fp:
            raise InvalidInput(
                "Idempotency-Key: already used with a different request body; use a new key"
            )
        if entry.accepted is None:
            raise RequestInProgress(
                "Idempotency-Key: a request with this key is still in progress; retry shortly"
            )
        return entry.accepted

    async def bind(self, owner: str, key: str, fp: str, accepted: JobAccepted) -> None:
        """Bind the key to the job's answer for the TTL."""
        value = orjson.dumps({"fp": fp, "accepted": accepted.model_dump(mode="json")})
        await self.commands.execute("SET", _name(owner, key), value, "EX", self.ttl)

    async def refresh(self, owner: str, key: str) -> None:
        """Keep a pending entry alive while a long upload goes on."""
        await self.redis.expire(_name(owner, key), PENDING_SECONDS)

    async def release(self, owner: str, key: str) -> None:
        """Forget a pending entry whose request failed, so that a retry can go ahead."""
        await self.redis.delete(_name(owner, key))


def _name(owner: str, key: str) -> str:
    # Hashed: keys are client-chosen text, and the Redis key stays short whatever they send.
    return f"{PREFIX}:idem:{owner or '-'}:{hashlib.sha256(key.encode()).hexdigest()}"


def _entry(raw: bytes | str) -> Entry:
    value = orjson.loads(raw)
    accepted = value.get("accepted")
    return Entry(value.get("fp", ""), JobAccepted.model_validate(accepted) if accepted else None)
