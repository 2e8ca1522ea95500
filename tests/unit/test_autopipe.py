"""Automatic pipelining: concurrent commands share one pipeline, each gets its own reply."""

from __future__ import annotations

import asyncio
from typing import Any

import fakeredis
import pytest
from redis.exceptions import ConnectionError, ResponseError

from gateway.autopipe import AutoPipeline


def counting(redis: fakeredis.FakeAsyncRedis) -> list[int]:
    """Counts the pipelines `redis` makes (one element per pipeline)."""
    made: list[int] = []
    pipeline = redis.pipeline

    def wrapper(transaction: bool = True) -> Any:
        made.append(1)
        return pipeline(transaction)

    redis.pipeline = wrapper  # type: ignore[method-assign]
    return made


def test_commands_of_one_turn_share_one_pipeline_and_keep_their_replies() -> None:
    async def scenario() -> tuple[list[Any], int]:
        redis = fakeredis.FakeAsyncRedis()
        for i in range(20):
            await redis.hset(f"h{i}", mapping={"a": str(i)})
        made = counting(redis)
        commands = AutoPipeline(redis)
        replies = await asyncio.gather(*(commands.execute("HGET", f"h{i}", "a") for i in range(20)))
        return list(replies), len(made)

    replies, pipelines = asyncio.run(scenario())
    assert replies == [str(i).encode() for i in range(20)]
    assert pipelines == 1


def test_an_error_goes_to_its_own_caller_only() -> None:
    async def scenario() -> list[Any]:
        redis = fakeredis.FakeAsyncRedis()
        await redis.set("s", "x")
        commands = AutoPipeline(redis)
        return await asyncio.gather(
            commands.execute("GET", "s"),
            commands.execute("HGET", "s", "a"),  # WRONGTYPE
            commands.execute("GET", "missing"),
            return_exceptions=True,
        )

    ok, wrong, missing = asyncio.run(scenario())
    assert ok == b"x" and missing is None
    assert isinstance(wrong, ResponseError) and "WRONGTYPE" in str(wrong)


def test_a_script_redis_does_not_know_is_loaded_and_run() -> None:
    async def scenario() -> list[Any]:
        redis = fakeredis.FakeAsyncRedis()
        script = redis.register_script("return {KEYS[1], ARGV[1]}")
        commands = AutoPipeline(redis)
        first = await commands.script(script, ["k"], ["v"])  # NOSCRIPT, then loaded
        await redis.script_flush()
        again = await asyncio.gather(*(commands.script(script, [f"k{i}"], ["v"]) for i in range(3)))
        return [first, *again]

    assert asyncio.run(scenario()) == [[b"k", b"v"], [b"k0", b"v"], [b"k1", b"v"], [b"k2", b"v"]]


def test_a_cancelled_caller_does_not_disturb_the_others() -> None:
    async def scenario() -> list[Any]:
        redis = fakeredis.FakeAsyncRedis()
        await redis.set("s", "x")
        commands = AutoPipeline(redis)
        doomed = asyncio.ensure_future(commands.execute("GET", "s"))
        kept = asyncio.ensure_future(commands.execute("GET", "s"))
        await asyncio.sleep(0)
        doomed.cancel()
        return [await kept, doomed.cancelled()]

    assert asyncio.run(scenario()) == [b"x", True]


def test_a_failed_connection_fails_every_caller_of_the_turn() -> None:
    async def scenario() -> list[Any]:
        server = fakeredis.FakeServer()
        server.connected = False  # as a Redis that is down
        redis = fakeredis.FakeAsyncRedis(server=server)
        commands = AutoPipeline(redis)
        return await asyncio.gather(
            *(commands.execute("GET", "s") for _ in range(3)), return_exceptions=True
        )

    errors = asyncio.run(scenario())
    assert len(errors) == 3 and all(isinstance(e, ConnectionError) for e in errors)


@pytest.mark.parametrize("n", [1, 50])
def test_an_idle_gateway_sends_at_once(n: int) -> None:
    async def scenario() -> int:
        redis = fakeredis.FakeAsyncRedis()
        made = counting(redis)
        commands = AutoPipeline(redis)
        for _ in range(n):  # one after another: one pipeline each, no waiting for company
            await commands.execute("PING")
        return len(made)

    assert asyncio.run(scenario()) == n
