"""The one place Redis clients are built: one Redis (`redis_url`) or a Sentinel-managed master.

With `redis_sentinels` set, every client asks the sentinels for the current master on each new
connection. Their connections drop themselves when the server they reach is gone, no longer the
master (READONLY, redis-py) or refuses writes for want of a replica (NOREPLICAS,
`MasterConnection`), so the next command, a retry or a resubscription lands on the promoted
replica without a restart. Celery gets the same through kombu's `sentinel://` transport (broker,
also on `MasterConnection`: `worker.kombu_patch`) and Celery's Sentinel result backend.

The other half of surviving a failover is `shared.replication`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel
from redis import Redis
from redis.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from shared.settings import Settings

# Celery's broker and result backend with Sentinel: seconds a command may wait for its reply
# (longer than kombu's 1 s BRPOP), and between kombu's checks of its long-lived connections.
SOCKET_TIMEOUT = 5.0
HEALTH_CHECK_INTERVAL = 2

# A pipeline's or a script's error quotes the reply inside a longer message.
_CANNOT_WRITE = re.compile(r"\bNOREPLICAS\b")


def _cannot_write(exc: ResponseError) -> RedisConnectionError | None:
    if _CANNOT_WRITE.search(str(exc)) is None:
        return None
    return RedisConnectionError(f"the master takes no writes without a replica: {exc}")


class MasterConnection(redis.sentinel.SentinelManagedConnection):
    """A Sentinel-managed connection on which a master that refuses writes for want of a
    replica (NOREPLICAS: it is isolated, or was just promoted and has none yet) counts as a lost
    connection, as redis-py already counts a demoted one (READONLY). Clients then reconnect
    through the sentinels and retry as they do after any connection loss, and Celery's consumer
    reconnects instead of stopping on an error it deems unrecoverable."""

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)
        except ResponseError as exc:
            lost = _cannot_write(exc)
            if lost is None:
                raise
            self.disconnect()  # type: ignore[no-untyped-call,unused-ignore]
            raise lost from exc


class MasterSSLConnection(MasterConnection, redis.sentinel.SentinelManagedSSLConnection):
    """`MasterConnection` over TLS."""


class AsyncMasterConnection(redis.asyncio.sentinel.SentinelManagedConnection):
    """`MasterConnection` for asyncio clients."""

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)
        except ResponseError as exc:
            lost = _cannot_write(exc)
            if lost is None:
                raise
            await self.disconnect()
            raise lost from exc


class AsyncMasterSSLConnection(
    AsyncMasterConnection, redis.asyncio.sentinel.SentinelManagedSSLConnection
):
    """`AsyncMasterConnection` over TLS."""


def sync_redis(settings: Settings, **options: Any) -> Redis:
    """A synchronous client of the master; `options` are redis-py connection keywords."""
    if not settings.redis_sentinels:
        return Redis.from_url(settings.redis_url.get_secret_value(), **options)
    master, sentinel_kwargs = _sentinel_params(settings, MasterConnection, MasterSSLConnection)
    manager = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call,unused-ignore]
        _addresses(settings), sentinel_kwargs={**sentinel_kwargs, **_timeouts(options)}
    )
    name = settings.redis_master_name
    client: Redis = manager.master_for(name, **master, **options)  # type: ignore[no-untyped-call,unused-ignore]
    return client


def async_redis(settings: Settings, **options: Any) -> redis.asyncio.Redis:
    """An asyncio client of the master; `options` are redis-py connection keywords."""
    if not settings.redis_sentinels:
        return redis.asyncio.Redis.from_url(settings.redis_url.get_secret_value(), **options)
    master, sentinel_kwargs = _sentinel_params(
        settings, AsyncMasterConnection, AsyncMasterSSLConnection
    )
    manager = redis.asyncio.sentinel.Sentinel(  # type: ignore[no-untyped-call,unused-ignore]
        _addresses(settings), sentinel_kwargs={**sentinel_kwargs, **_timeouts(options)}
    )
    client: redis.asyncio.Redis = manager.master_for(
        settings.redis_master_name, **master, **options
    )
    return client


@dataclass(frozen=True)
class CeleryRedis:
    """What `create_celery` needs to reach Redis: URLs and transport options."""

    broker_url: str
    backend_url: str
    broker_options: dict[str, Any]
    backend_options: dict[str, Any]
    broker_ssl: dict[str, Any] | None = None
    backend_ssl: dict[str, Any] | None = None
    backend_conf: dict[str, Any] = field(default_factory=dict)  # Celery's `redis_*` settings


def celery_redis(settings: Settings) -> CeleryRedis:
    """Broker and result backend URLs: `redis_url`, or kombu's `sentinel://` list of sentinels
    (the master's password and database travel in each entry, `master_name` in the options)."""
    if not settings.redis_sentinels:
        return CeleryRedis(settings.redis_url.get_secret_value(), settings.backend_url, {}, {})
    params = parse_url(settings.redis_url.get_secret_value())  # type: ignore[no-untyped-call,unused-ignore]
    auth = ""
    if params.get("password"):
        auth = f"{quote(params.get('username') or '', safe='')}:"
        auth += f"{quote(params['password'], safe='')}@"
    db = params.get("db", 0)
    url = ";".join(f"sentinel://{auth}{address}/{db}" for address in settings.redis_sentinels)
    # A master that dies with its host (a killed container, a lost VM) closes no connection:
    # without timeouts kombu's reconnect to its address waits out TCP's SYN retries (about two
    # minutes, seen in the container drill) and a BRPOP on the half-open connection for ever.
    # kombu drops a BRPOP reply overdue by brpop_timeout (1 s) + health_check_interval.
    options: dict[str, Any] = {
        "master_name": settings.redis_master_name,
        "socket_connect_timeout": settings.redis_timeout,
        "socket_timeout": max(SOCKET_TIMEOUT, settings.redis_timeout),
        "socket_keepalive": True,
        "health_check_interval": HEALTH_CHECK_INTERVAL,
    }
    sentinel_kwargs = _sentinel_auth(settings)
    if sentinel_kwargs:
        options["sentinel_kwargs"] = sentinel_kwargs
    ssl = _ssl_options(params) or None
    backend = settings.result_backend_url
    return CeleryRedis(
        broker_url=url,
        backend_url=backend.get_secret_value() if backend else url,
        broker_options=options,
        backend_options=dict(options),
        broker_ssl=ssl,
        backend_ssl=ssl,
        backend_conf={
            "redis_socket_connect_timeout": settings.redis_timeout,
            "redis_socket_timeout": max(SOCKET_TIMEOUT, settings.redis_timeout),
            "redis_backend_health_check_interval": HEALTH_CHECK_INTERVAL,
        },
    )


def _addresses(settings: Settings) -> list[tuple[str, int]]:
    pairs = (address.rpartition(":") for address in settings.redis_sentinels)
    return [(host.strip("[]"), int(port)) for host, _, port in pairs]


def _sentinel_params(
    settings: Settings, plain_class: type, ssl_class: type
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(master connection keywords from `redis_url`, sentinel connection keywords)."""
    params = parse_url(settings.redis_url.get_secret_value())  # type: ignore[no-untyped-call,unused-ignore]
    for address in ("host", "port", "path", "unix_socket_path"):
        params.pop(address, None)
    ssl = _ssl_options(params)
    params.pop("connection_class", None)
    params["connection_class"] = ssl_class if ssl else plain_class
    sentinel_kwargs = _sentinel_auth(settings)
    if settings.redis_sentinel_tls:
        sentinel_kwargs.update(ssl=True, **ssl)
    return params, sentinel_kwargs


def _sentinel_auth(settings: Settings) -> dict[str, Any]:
    password = settings.redis_sentinel_password
    return {"password": password.get_secret_value()} if password else {}


def _ssl_options(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k.startswith("ssl_")} if _is_tls(params) else {}


def _is_tls(params: dict[str, Any]) -> bool:
    connection_class = params.get("connection_class")
    return connection_class is not None and "SSL" in connection_class.__name__


def _timeouts(options: dict[str, Any]) -> dict[str, Any]:
    # A sentinel that hangs must not hang the client longer than the master would.
    return {k: v for k, v in options.items() if k in ("socket_timeout", "socket_connect_timeout")}
