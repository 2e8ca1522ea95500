"""The gateway's typed lifespan state: what the app opens at start and every request uses."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from gateway.aliases import Aliases
from gateway.autopipe import AutoPipeline
from gateway.backpressure import QueueDepth
from gateway.events import JobEvents
from gateway.jobs import Jobs
from gateway.publisher import BrokerPublisher, Publisher
from shared.redis_clients import async_redis
from shared.registry import Registry
from shared.settings import Settings


@dataclass
class GatewayState:
    """Settings, Redis, the registry and the jobs service of one gateway process."""

    settings: Settings
    redis: Redis
    registry: Registry
    events: JobEvents
    jobs: Jobs
    queue_depth: QueueDepth

    @classmethod
    def create(
        cls, settings: Settings, redis: Redis | None = None, publisher: Publisher | None = None
    ) -> GatewayState:
        """Wire the parts; tests pass their own Redis and publisher."""
        if redis is None:
            redis = async_redis(
                settings,
                socket_timeout=settings.redis_timeout,
                socket_connect_timeout=settings.redis_timeout,
                health_check_interval=30,
            )
        # One auto-pipeline for the hot path's commands, task messages included: what concurrent
        # requests send in one turn of the event loop shares one write and one read.
        commands = AutoPipeline(redis)
        if publisher is None:
            publisher = BrokerPublisher(commands)
        registry = Registry(settings.model_dir, settings.default_model, cache_seconds=1.0)
        events = JobEvents(redis)
        jobs = Jobs(settings, registry, redis, events, publisher, commands)
        return cls(settings, redis, registry, events, jobs, QueueDepth(settings.max_queue_depth))

    @property
    def aliases(self) -> Aliases:
        """The model aliases of this process (owned by the jobs service, which resolves them)."""
        return self.jobs.aliases

    def start(self) -> None:
        """Start listening for finished jobs and alias changes (needs the running event loop)."""
        self.events.start()
        self.aliases.start()

    async def close(self) -> None:
        """Send what is pending, stop listening, close the Redis connections (the broker's too)."""
        await self.aliases.stop()
        await self.jobs.close()
        await self.events.stop()
        await self.redis.aclose()
