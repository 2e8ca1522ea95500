"""The gateway's side of model aliases: its copy of them, kept fresh, and the admin operations.

A background task reads the epoch every `POLL_SECONDS / 2` and the aliases when it moved, so that
resolving a job's model (`Registry.pin`, synchronous) never waits for Redis; a change made through
this process is loaded at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared import aliases as al
from shared.aliases import AliasBook, AliasesView, AliasTarget, HistoryView
from shared.errors import AliasNotFound
from shared.redisio import text
from shared.registry import Registry

log = logging.getLogger(__name__)


class Aliases:
    """Reads, changes and follows the aliases for one gateway process."""

    def __init__(self, redis: Redis, registry: Registry) -> None:
        self.redis = redis
        self.registry = registry
        if not isinstance(registry.aliases, AliasBook):  # the registry resolves through this copy
            registry.aliases = AliasBook()
        self.book: AliasBook = registry.aliases
        self._script = redis.register_script(al.SET_ALIAS)
        self._task: asyncio.Task[None] | None = None

    async def refresh(self, force: bool = False) -> None:
        """Re-read the epoch, and the aliases when it moved (or when `force`)."""
        epoch = text(await self.redis.get(al.EPOCH))
        if epoch == self.book.epoch and not force:
            self.book.seen()
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(al.EPOCH)
            pipe.hgetall(al.TARGETS)
            epoch_now, raw = await pipe.execute()
        self.book.load(text(epoch_now), raw)

    async def ensure(self) -> None:
        """Load the aliases if this process has not yet (before its first job is resolved)."""
        if self.book.epoch is None:
            await self.refresh(force=True)

    def start(self) -> None:
        """Follow changes made by other processes (needs the running event loop)."""
        self._task = asyncio.create_task(self._follow())

    async def stop(self) -> None:
        """Stop following."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _follow(self) -> None:
        failing = False
        while True:
            try:
                await self.refresh()
                failing = False
            except RedisError as exc:  # keep the last copy; say so once per outage
                if not failing:
                    log.warning("model aliases not refreshed", extra={"error": str(exc)})
                failing = True
            await asyncio.sleep(al.POLL_SECONDS / 2)

    def view(self, name: str) -> AliasesView:
        """The aliases of model `name`."""
        self._known(name)
        return AliasesView(name=name, aliases=self.book.of(name))

    async def put(self, name: str, alias: str, target: AliasTarget, who: str) -> AliasesView:
        """Point `name@alias` at `target` (whose versions must exist); `who` is the admin key's
        id."""
        self._known(name)
        for version in [*target.primaries(), *([target.shadow] if target.shadow else [])]:
            self.registry.resolve(f"{name}:{version}")  # ModelNotFound (422) naming it
        await self._change(name, alias, target, who)
        log.info(
            "model alias set",
            extra={"model": name, "alias": alias, "target": target.stored().decode(), "who": who},
        )
        return AliasesView(name=name, aliases=self.book.of(name))

    async def delete(self, name: str, alias: str, who: str) -> AliasesView:
        """Remove `name@alias`; `AliasNotFound` when it does not exist."""
        self._known(name)
        if not await self._change(name, alias, None, who):
            raise AliasNotFound(f"model {name!r} has no alias {alias!r}", model=name, alias=alias)
        log.info("model alias deleted", extra={"model": name, "alias": alias, "who": who})
        return AliasesView(name=name, aliases=self.book.of(name))

    async def history(self, name: str) -> HistoryView:
        """The alias changes of model `name`, newest first."""
        entries = await self.redis.lrange(al.history_key(name), 0, -1)
        if not entries:
            self._known(name)
        return HistoryView(name=name, changes=al.parse_history(entries))

    async def _change(self, name: str, alias: str, target: AliasTarget | None, who: str) -> str:
        call = al.set_alias(name, alias, target, who, datetime.now(UTC).isoformat())
        old = text(await self._script(keys=call.keys, args=call.args))
        await self.refresh(force=True)  # this process sees its own change at once
        return old

    def _known(self, name: str) -> None:
        if name not in self.registry.names():
            raise AliasNotFound(f"unknown model {name!r}", model=name)
