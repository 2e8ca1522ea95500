"""Per-key limits kept in Redis, so that they hold across gateway processes: concurrent CSV
uploads, concurrent long polls, result bytes stored; and one global cap on CSV chunk bytes
waiting in Redis to be scored.

A concurrency slot is a member of a sorted set per key and kind, scored by when its lease ends;
taking one drops expired leases first, in the same script. A gateway that crashes holding a slot
therefore frees it when the lease ends (a long upload renews its lease while it runs), never
leaking it. Stored bytes are counted in time buckets that expire after `result_ttl`, as the
results they stand for do.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final

from redis.asyncio import Redis

from gateway.autopipe import AutoPipeline
from shared import csvjobs
from shared.errors import QueueUnavailable, RateLimited
from shared.jobstore import PREFIX
from shared.settings import Settings

RESULT_BYTES_PER_PREDICTION: Final = 24
"""A prediction as stored and sent back (a float's shortest repr and a separator), at most."""
BUCKETS_PER_TTL: Final = 24

# KEYS[1] the key's slots; ARGV: now, lease end, token, limit, key TTL. 1 if taken, else 0.
TAKE_SLOT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""

# KEYS: the key's byte buckets in the window, the current one first; ARGV: bytes, limit, TTL of
# a bucket. Adds the bytes and returns -1, or returns the total without adding when over. A
# bucket lives `result_ttl` after its last job, as that job's result does.
ADD_BYTES = """
local total = 0
for _, value in ipairs(redis.call('MGET', unpack(KEYS))) do
  total = total + (tonumber(value) or 0)
end
if total + tonumber(ARGV[1]) > tonumber(ARGV[2]) then
  return total
end
redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return -1
"""


@dataclass(frozen=True)
class ResultBytes:
    """The stored-result-bytes limit of a key: its bytes are counted in time buckets that
    expire after `ttl` (as the results they stand for do), at most `limit` within the window.
    The JSON submit path charges them in the script that creates a batch's records (see
    `gateway.store.CREATE`), CSV uploads per chunk (`Quotas.add_results`)."""

    limit: int
    ttl: int

    @property
    def width(self) -> int:
        """Seconds per bucket."""
        return max(60, self.ttl // BUCKETS_PER_TTL)

    def buckets(self, owner: str) -> list[str]:
        """The owner's bucket keys in the window, the current one first."""
        now = int(time.time()) // self.width
        first = now - self.ttl // self.width - 1
        return [f"{PREFIX}:quota:bytes:{owner}:{b}" for b in range(now, first, -1)]

    @staticmethod
    def size(predictions: int) -> int:
        """The bytes `predictions` results count for."""
        return predictions * RESULT_BYTES_PER_PREDICTION

    def refusal(self, total: int, size: int) -> RateLimited:
        """The 429 for a job of `size` bytes when the key has `total` stored."""
        return RateLimited(
            f"this API key has {total} bytes of results stored, and {size} more would pass its "
            f"limit of {self.limit} (MLQUEUE_MAX_STORED_BYTES_PER_KEY); retry once older results "
            "have expired",
            retry_after=self.width,
        )


class Quotas:
    """The limits of `Settings`, checked for one API key (`owner`) at a time."""

    def __init__(
        self, redis: Redis, settings: Settings, commands: AutoPipeline | None = None
    ) -> None:
        self.redis = redis
        self.commands = commands or AutoPipeline(redis)  # the hot path's slot takes and releases
        self.settings = settings
        self.results = ResultBytes(settings.max_stored_bytes_per_key, settings.result_ttl)
        self._take = redis.register_script(TAKE_SLOT)
        self._add = redis.register_script(ADD_BYTES)
        self._waiting = redis.register_script(csvjobs.WAITING_BYTES)

    @contextlib.asynccontextmanager
    async def upload(self, owner: str) -> AsyncIterator[None]:
        """Hold one of the key's upload slots while the block runs (429 if none is free)."""
        idle = self.settings.upload_idle_timeout
        async with self._slot("uploads", owner, self.settings.max_uploads_per_key, 2 * idle + 5):
            yield

    async def long_poll_slot(self, owner: str, seconds: float) -> Lease:
        """One of the key's long-poll slots for a wait of `seconds`, held until released (429 if
        none is free)."""
        limit = self.settings.max_long_polls_per_key
        return await self.hold("long-polls", owner, limit, seconds + 5, renew=False)

    def take_long_poll(self, owner: str, seconds: float) -> asyncio.Future[Lease]:
        """`long_poll_slot`, started now and awaited later: the caller's own Redis work goes in
        the same round trip. A slot then not wanted is given back with `forgo`."""
        return asyncio.ensure_future(self.long_poll_slot(owner, seconds))

    async def add_results(self, owner: str, predictions: int) -> None:
        """Count the result bytes of `predictions` more against the key (429 when over)."""
        quota, size = self.results, ResultBytes.size(predictions)
        total = int(await self._add(keys=quota.buckets(owner), args=[size, quota.limit, quota.ttl]))
        if total >= 0:
            raise quota.refusal(total, size)

    async def check_waiting_chunks(self, more: int) -> None:
        """A 503 if `more` chunk bytes would pass the global cap of chunk bytes waiting."""
        waiting = int(await self._waiting(keys=[csvjobs.WAITING_CHUNKS], args=[time.time()]))
        limit = self.settings.max_waiting_chunk_bytes
        if waiting + more > limit:
            raise QueueUnavailable(
                f"{waiting} bytes of CSV chunks wait to be scored, the most Redis may hold "
                f"is {limit} (MLQUEUE_MAX_WAITING_CHUNK_BYTES); retry shortly"
            )

    async def event_stream(self, owner: str) -> Lease:
        """One of the key's event-stream slots, held until released (429 if none is free)."""
        limit = self.settings.max_event_streams_per_key
        refusal = (
            f"too many open event streams for this API key (at most {limit}, "
            "MLQUEUE_MAX_EVENT_STREAMS_PER_KEY); close one or poll"
        )
        return await self.hold("event-streams", owner, limit, 60.0, refusal=refusal)

    async def hold(
        self,
        kind: str,
        owner: str,
        limit: int,
        lease: float,
        renew: bool = True,
        refusal: str | None = None,
    ) -> Lease:
        """One of the key's `kind` slots, leased for `lease` seconds (renewed while held when
        `renew`); `RateLimited` (429) when all `limit` are taken."""
        key = f"{PREFIX}:quota:{kind}:{owner}"
        token = str(uuid.uuid4())
        if not await self._lease(key, token, limit, lease):
            raise RateLimited(
                refusal
                or f"this API key already has {limit} {kind.replace('-', ' ')} in progress, its "
                f"limit (MLQUEUE_MAX_{kind.replace('-', '_').upper()}_PER_KEY); retry when one "
                "ends",
                retry_after=5 if refusal is None else 1,
            )
        renewer = asyncio.create_task(self._renew(key, token, lease)) if renew else None
        return Lease(self, key, token, renewer)

    @contextlib.asynccontextmanager
    async def _slot(
        self, kind: str, owner: str, limit: int, lease: float, renew: bool = True
    ) -> AsyncIterator[None]:
        held = await self.hold(kind, owner, limit, lease, renew)
        try:
            yield
        finally:
            await held.release()

    async def _lease(self, key: str, token: str, limit: int, lease: float) -> bool:
        now = time.time()
        args: list[float | str] = [now, now + lease, token, limit, math.ceil(lease) + 1]
        # Shielded: a slot taken for a request cancelled meanwhile would stay held to its end.
        return bool(await asyncio.shield(self.commands.script(self._take, [key], args)))

    async def _renew(self, key: str, token: str, lease: float) -> None:
        """Push the lease on while the holder runs (a long upload outlives its first lease)."""
        while True:
            await asyncio.sleep(lease / 3)
            with contextlib.suppress(Exception):
                now = time.time()
                await self.redis.zadd(key, {token: now + lease}, xx=True)
                await self.redis.expire(key, math.ceil(lease) + 1)


class Lease:
    """A slot held in Redis (see `Quotas.hold`) until `release`; its lease ends it anyway if
    the gateway dies holding it."""

    def __init__(
        self, quotas: Quotas, key: str, token: str, renewer: asyncio.Task[None] | None
    ) -> None:
        self._quotas, self._key, self._token, self._renewer = quotas, key, token, renewer
        self.held = True

    async def release(self) -> None:
        """Give the slot back (idempotent). Awaited before the answer goes out: a client that
        sends its next request at once must find the slot free, or a key that uses all its
        slots would see a 429 now and then."""
        if not self.held:
            return
        self.held = False
        if self._renewer is not None:
            self._renewer.cancel()
        with contextlib.suppress(Exception):  # the lease ends by itself anyway
            await asyncio.shield(self._quotas.commands.execute("ZREM", self._key, self._token))


async def forgo(taking: asyncio.Future[Lease]) -> None:
    """Give back the slot `taking` gets, if it gets one (its refusal is then nobody's error)."""
    with contextlib.suppress(Exception):
        await (await taking).release()
