"""Writes that make a promise wait until a replica has them (`WAIT`), on Sentinel deployments.

Redis replicates asynchronously: a write the master acknowledged can vanish with it when Sentinel
promotes a replica that had not received it yet. So the writes behind a promise (a 202 or a
`/predict` answer, a CSV chunk counted as received, a worker's result before its message is
acknowledged) end with `WAIT 1 <ms>` queued on the same pipeline, hence the same connection, and
the promise is kept back unless a replica confirmed in time (`NotReplicated`, a 503 in the
gateway; a requeued message in the worker). On a single Redis there is nothing to wait for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.commands.core import AsyncScript, Script
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.errors import NotReplicated
from shared.redisio import ScriptCall
from shared.settings import Settings


@dataclass(frozen=True)
class ReplicaWait:
    """`WAIT replicas timeout_ms` after a promise-making write, and the check of its reply."""

    replicas: int
    timeout_ms: int

    @classmethod
    def of(cls, settings: Settings) -> ReplicaWait | None:
        """The wait the settings ask for: none on a single Redis or with `replica_wait` off."""
        if not settings.redis_sentinels or not settings.replica_wait:
            return None
        return cls(1, max(1, round(settings.replica_wait_timeout * 1000)))

    def queue(self, pipe: Any) -> None:
        """Queue the WAIT on `pipe` (sync or asyncio), after the writes it vouches for."""
        pipe.execute_command("WAIT", self.replicas, self.timeout_ms)

    def check(self, reply: object, what: str) -> None:
        """Raise `NotReplicated` unless `reply` (WAIT's) counts enough replicas."""
        if not isinstance(reply, int) or reply < self.replicas:
            raise NotReplicated(
                f"{what}: no Redis replica confirmed the write within {self.timeout_ms} ms",
                retry_after=1,
            )


def run_script(
    redis: Redis, wait: ReplicaWait | None, script: Script, call: ScriptCall, what: str
) -> Any:
    """`script(call)`, then (if `wait`) WAIT on the same connection; returns the script's reply."""
    if wait is None:
        return script(keys=call.keys, args=call.args)
    with redis.pipeline(transaction=False) as pipe:
        script(keys=call.keys, args=call.args, client=pipe)
        wait.queue(pipe)
        reply, replicas = pipe.execute()
    wait.check(replicas, what)
    return reply


async def run_script_async(
    redis: AsyncRedis, wait: ReplicaWait | None, script: AsyncScript, call: ScriptCall, what: str
) -> Any:
    """`run_script` for the gateway's asyncio client."""
    if wait is None:
        return await script(keys=call.keys, args=call.args)
    async with redis.pipeline(transaction=False) as pipe:
        await script(keys=call.keys, args=call.args, client=pipe)
        wait.queue(pipe)
        reply, replicas = await pipe.execute()
    wait.check(replicas, what)
    return reply


# Replies of a master that cannot take writes for now: it has no replica in sync
# (`min-replicas-to-write`), it was demoted, it is loading its data, or it lost its master; or
# one that is new (a promoted replica, a restart) and lacks the scripts a pipeline loaded on the
# old one (the next attempt loads them again).
# A pipeline's error quotes the reply after the failed command, hence a search, not a prefix.
_TRANSIENT_REPLY = re.compile(r"\b(NOREPLICAS|READONLY|LOADING|MASTERDOWN|NOSCRIPT)\b")


def redis_is_away(exc: BaseException) -> bool:
    """Whether `exc` says Redis cannot take the write now (a failover, a restart), as opposed to
    a fault of the job: the work should be handed back, not failed."""
    # redis-py strips the code off the replies it has a class for (READONLY, NOSCRIPT).
    away = RedisConnectionError | RedisTimeoutError | NotReplicated | NoScriptError | ReadOnlyError
    if isinstance(exc, away):
        return True
    return isinstance(exc, ResponseError) and _TRANSIENT_REPLY.search(str(exc)) is not None
