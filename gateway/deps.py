"""Request dependencies as `Annotated` aliases; tests swap them via `app.dependency_overrides`.

They are `async def` on purpose: FastAPI runs a plain `def` dependency in the thread pool, a
thread hop per dependency per request that cost the hot routes ~15 % of the gateway's CPU.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from redis.asyncio import Redis

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


async def get_owner() -> str:
    """Who is calling: jobs are visible only to their owner ("" when keys are off)."""
    return ""


SettingsDep = Annotated[Settings, Depends(get_settings)]
JobQueueDep = Annotated[JobQueue, Depends(get_queue)]
RedisDep = Annotated[Redis, Depends(get_redis)]
RegistryDep = Annotated[Registry, Depends(get_registry)]
OwnerDep = Annotated[str, Depends(get_owner)]
