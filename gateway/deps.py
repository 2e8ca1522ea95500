"""Request dependencies as `Annotated` aliases; tests swap them via `app.dependency_overrides`.

They are `async def` on purpose: FastAPI runs a plain `def` dependency in the thread pool, a
thread hop per dependency per request that cost the hot routes ~15 % of the gateway's CPU.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from redis.asyncio import Redis
from starlette.exceptions import HTTPException

from gateway import keys
from gateway.backpressure import QueueDepth
from gateway.queue import JobQueue
from shared.registry import Registry
from shared.settings import Settings


async def get_settings(request: Request) -> Settings:
    """The app's settings."""
    settings: Settings = request.app.state.settings
    return settings


async def get_queue(request: Request) -> JobQueue:
    """The job queue opened by the lifespan."""
    queue: JobQueue = request.app.state.queue
    return queue


async def get_redis(request: Request) -> Redis:
    """The gateway's Redis client."""
    redis: Redis = request.app.state.redis
    return redis


async def get_registry(request: Request) -> Registry:
    """The model registry."""
    registry: Registry = request.app.state.registry
    return registry


_bearer = HTTPBearer(auto_error=False, description="An API key, when `MLQUEUE_API_KEYS` is set.")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def get_owner(request: Request, credentials: Credentials) -> str:
    """Who is calling: the id of a valid API key ("" when keys are off); 401 otherwise.

    Jobs are visible only to their owner. Routers that need a key depend on this function, so
    it runs once per request (FastAPI caches a dependency within a request).
    """
    settings: Settings = request.app.state.settings
    digests = settings.api_keys + settings.admin_keys
    if not digests:
        return ""
    found = keys.match(credentials.credentials, digests) if credentials else None
    if found is None:
        raise HTTPException(
            401,
            "a valid API key is required: Authorization: Bearer <key>",
            {"WWW-Authenticate": "Bearer"},
        )
    return keys.owner_id(found)


async def metrics_access(request: Request, credentials: Credentials) -> None:
    """`/metrics` needs a key like `/v1`, unless `MLQUEUE_METRICS_PUBLIC` opens it."""
    settings: Settings = request.app.state.settings
    if not settings.metrics_public:
        await get_owner(request, credentials)


async def queue_has_room(request: Request, redis: Annotated[Redis, Depends(get_redis)]) -> None:
    """503 with Retry-After when the queue is deeper than `MLQUEUE_MAX_QUEUE_DEPTH`."""
    depth: QueueDepth = request.app.state.queue_depth
    await depth.check(redis)


SettingsDep = Annotated[Settings, Depends(get_settings)]
JobQueueDep = Annotated[JobQueue, Depends(get_queue)]
RedisDep = Annotated[Redis, Depends(get_redis)]
RegistryDep = Annotated[Registry, Depends(get_registry)]
OwnerDep = Annotated[str, Depends(get_owner)]
QueueHasRoom = Depends(queue_has_room)
