"""Per-key rate limits: two token buckets (jobs/s, rows/s) per API key, in Redis.

One Lua script refills and takes from both buckets atomically, in one round trip, so every
gateway process shares the same budget. A request over either bucket takes nothing and gets 429
with `Retry-After` and the `RateLimit` / `RateLimit-Policy` fields of the IETF httpapi draft
(draft-ietf-httpapi-ratelimit-headers: `"<policy>";q=<quota>;w=<window>` and
`"<policy>";r=<remaining>;t=<seconds until refilled>`). A bucket holds `burst` tokens and refills
at `rate` per second, so the policy's quota is the burst and its window burst/rate seconds.
A request costs at most a bucket's burst (a job larger than the burst waits for a full bucket),
so every request can eventually pass. With no limit configured nothing is called.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Final

from redis.asyncio import Redis

from shared.errors import RateLimited
from shared.jobstore import PREFIX
from shared.redisio import Arg, ScriptCall, text
from shared.settings import RateLimit, Settings

# KEYS: the jobs bucket, the rows bucket (hashes: tokens, ts). ARGV: now; then for each bucket
# rate, burst, cost (rate 0: unlimited). Returns {allowed (1/0), jobs tokens, rows tokens,
# seconds to wait}, as strings (Lua numbers would be truncated to integers).
TAKE: Final = """
local now = tonumber(ARGV[1])
local tokens, wait = {}, 0
for i = 1, 2 do
  local rate, burst, cost = tonumber(ARGV[3*i-1]), tonumber(ARGV[3*i]), tonumber(ARGV[3*i+1])
  if rate > 0 then
    local state = redis.call('HMGET', KEYS[i], 'tokens', 'ts')
    local have = tonumber(state[1]) or burst
    local since = math.max(0, now - (tonumber(state[2]) or now))
    have = math.min(burst, have + since * rate)
    tokens[i] = have
    if have < cost - 1e-6 then  -- float rounding must not leave a refilled bucket short
      wait = math.max(wait, (cost - have) / rate)
    end
  else
    tokens[i] = -1
  end
end
if wait == 0 then
  for i = 1, 2 do
    local rate, burst, cost = tonumber(ARGV[3*i-1]), tonumber(ARGV[3*i]), tonumber(ARGV[3*i+1])
    if rate > 0 then
      tokens[i] = math.max(0, tokens[i] - cost)
      redis.call('HSET', KEYS[i], 'tokens', tostring(tokens[i]), 'ts', tostring(now))
      redis.call('EXPIRE', KEYS[i], math.ceil(burst / rate) + 1)
    end
  end
end
return {wait == 0 and 1 or 0, tostring(tokens[1]), tostring(tokens[2]), tostring(wait)}
"""
PACE_ATTEMPTS: Final = 1000  # a paced upload waits at most this many times per chunk


@dataclass(frozen=True)
class Decision:
    """The outcome of one take: allowed, tokens left per bucket (-1: unlimited), wait."""

    allowed: bool
    jobs_left: float
    rows_left: float
    wait: float


def take_call(owner: str, limit: RateLimit, jobs: int, rows: int) -> ScriptCall:
    """`TAKE` for `jobs` jobs and `rows` rows of `owner`'s buckets."""
    keys = [f"{PREFIX}:rate:{owner or '-'}:jobs", f"{PREFIX}:rate:{owner or '-'}:rows"]
    args: list[Arg] = [repr(time.time())]
    for rate, burst, cost in (
        (limit.jobs_per_second, limit.jobs_burst_size(), jobs),
        (limit.rows_per_second, limit.rows_burst_size(), rows),
    ):
        args += [repr(rate), repr(burst), repr(min(cost, burst) if rate > 0 else 0)]
    return ScriptCall(keys, args)


def decision(reply: list[object]) -> Decision:
    """A `TAKE` reply, typed."""
    allowed, jobs_left, rows_left, wait = (text(v) for v in reply)
    return Decision(allowed == "1", float(jobs_left), float(rows_left), float(wait))


def fields(limit: RateLimit, result: Decision) -> dict[str, str]:
    """`Retry-After`, `RateLimit` and `RateLimit-Policy` for a refused request."""
    policies, states = [], []
    for name, rate, burst, left in (
        ("jobs", limit.jobs_per_second, limit.jobs_burst_size(), result.jobs_left),
        ("rows", limit.rows_per_second, limit.rows_burst_size(), result.rows_left),
    ):
        if rate <= 0:
            continue
        window = max(1, math.ceil(burst / rate))
        policies.append(f'"{name}";q={math.floor(burst)};w={window}')
        refill = math.ceil(max(0.0, burst - left) / rate)
        states.append(f'"{name}";r={max(0, math.floor(left))};t={refill}')
    return {
        "Retry-After": str(max(1, math.ceil(result.wait))),
        "RateLimit": ", ".join(states),
        "RateLimit-Policy": ", ".join(policies),
    }


class RateLimiter:
    """Takes tokens from an owner's buckets, or refuses with `RateLimited`."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.default = settings.rate_limit()
        self.overrides = settings.rate_limit_overrides
        self.enabled = self.default.enabled or any(o.enabled for o in self.overrides.values())
        self._take = redis.register_script(TAKE)
        self.sleep = asyncio.sleep  # tests replace it to move their clock instead

    def limit_for(self, owner: str) -> RateLimit:
        """The owner's limits: its override, or the defaults."""
        return self.overrides.get(owner, self.default)

    async def take(self, owner: str, jobs: int = 1, rows: int = 0) -> None:
        """Spend `jobs` and `rows` tokens; `RateLimited` (429) when a bucket is short."""
        if not self.enabled:
            return
        limit = self.limit_for(owner)
        if not limit.enabled:
            return
        result = await self._call(owner, limit, jobs, rows)
        if not result.allowed:
            raise RateLimited(
                f"rate limit of this API key exceeded; retry in {result.wait:.1f} s",
                fields=fields(limit, result),
            )

    async def pace(self, owner: str, rows: int) -> None:
        """Spend `rows` tokens, waiting for them rather than refusing (a CSV upload's chunks:
        the upload slows down to the key's rows/s instead of failing half-way)."""
        limit = self.limit_for(owner)
        if not self.enabled or limit.rows_per_second <= 0:
            return
        for _ in range(PACE_ATTEMPTS):
            result = await self._call(owner, limit, 0, rows)
            if result.allowed:
                return
            await self.sleep(result.wait)
        raise RateLimited("rate limit of this API key exceeded", fields=fields(limit, result))

    async def _call(self, owner: str, limit: RateLimit, jobs: int, rows: int) -> Decision:
        call = take_call(owner, limit, jobs, rows)
        return decision(await self._take(keys=call.keys, args=call.args))
