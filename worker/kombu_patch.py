"""Workarounds for kombu Redis-transport crashes when Redis dies (or fails over) under a worker.

1. On a lost broker connection Celery closes the old channel; kombu then still uses that channel to
hand its unacknowledged messages back (`QoS.restore_unacked`) or to requeue a rejected message
(`QoS.reject`). Its connection is gone by then, so kombu's `Channel._connparams` raises
`AttributeError: 'NoneType' object has no attribute 'hostname'` (or `... 'client'`), which Celery
treats as unrecoverable: the worker exits, or its consumer stops while the process lives on. Seen
in `make drill` (Redis SIGKILLed under load, about one run in four); kombu issues #582 and #970
show the same path.

The patch turns "this channel's connection is gone" into a Redis `ConnectionError`, which is one
of the transport's connection errors that kombu and Celery already handle at those call sites
(log, then reconnect). The messages stay in Redis's `unacked` hash, and a worker restores them
once the visibility timeout has passed.

2. With Sentinel, a master that refuses writes for want of a replica (NOREPLICAS, right after
a failover) makes kombu's requeue or restore fail with an error Celery deems unrecoverable: the
worker stops. Its Sentinel channels use `shared.redis_clients.MasterConnection`, on which that
reply is a lost connection, so kombu reconnects through the sentinels instead.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError

from shared.redis_clients import MasterConnection, MasterSSLConnection


def closed_channel_is_a_connection_error(connparams: Callable[..., Any]) -> Callable[..., Any]:
    """`connparams`, raising `ConnectionError` when the channel's connection is already gone."""

    @functools.wraps(connparams)
    def _connparams(self: Any, *args: Any, **kwargs: Any) -> Any:
        connection = self.connection
        if connection is None or connection.client is None:
            raise RedisConnectionError("the channel's broker connection is closed")
        return connparams(self, *args, **kwargs)

    _connparams.patched = True  # type: ignore[attr-defined]
    return _connparams


def apply() -> None:
    """Install the workarounds (idempotent)."""
    kombu_redis.SentinelChannel.connection_class = MasterConnection
    kombu_redis.SentinelChannel.connection_class_ssl = MasterSSLConnection  # type: ignore[assignment]
    channel = kombu_redis.Channel
    if not getattr(channel._connparams, "patched", False):
        channel._connparams = closed_channel_is_a_connection_error(channel._connparams)  # type: ignore[method-assign]
