"""Automatic pipelining: the hot-path commands that concurrent requests issue in the same turn of
the event loop go to Redis as one pipeline, one write and one read for all of them.

Under load a gateway process serves dozens of requests at once, each reading its job or taking a
long-poll slot; sent one by one, every command pays a socket write, a wake-up for its reply and
redis-py's per-call connection handling. Grouped, those costs are paid once per turn (the same
idea as the auto-pipelining of ioredis and rueidis). An idle gateway sends a lone command on the
next turn, adding no measurable latency.

Commands grouped here must be independent of each other (reads, or atomic scripts): a pipeline
is not a transaction, and each reply, or error, goes back to its own caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from shared.redisio import Arg

_Pending = tuple[tuple[Arg, ...], "asyncio.Future[Any]"]


class AutoPipeline:
    """Sends the commands given to it within one event-loop turn as one pipeline."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._pending: list[_Pending] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def execute(self, *args: Arg) -> Any:
        """One command (`"HMGET", key, field, ...`); its reply, or its error raised."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append((args, future))
        return await future

    async def script(self, script: AsyncScript, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        """A Lua script, sent as EVALSHA in the turn's pipeline; loaded first if Redis does not
        know it (a fresh or restarted Redis) by the script's own call."""
        try:
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await script(keys=list(keys), args=list(args))

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.create_task(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[_Pending]) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for args, _ in batch:
                    pipe.execute_command(*args)
                replies = await pipe.execute(raise_on_error=False)
        except BaseException as exc:  # the connection failed: every caller gets the error
            for _, future in batch:
                if future.done():
                    continue
                if isinstance(exc, Exception):
                    future.set_exception(exc)
                else:  # the gateway is stopping
                    future.cancel()
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), reply in zip(batch, replies, strict=True):
            if future.done():  # its caller went away (a cancelled request)
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)
