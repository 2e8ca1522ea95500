"""Readiness: Redis answers, a worker beat recently, the default model exists."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from gateway.state import GatewayState
from shared.errors import ServiceError
from shared.jobstore import WORKERS
from shared.tasks import QUEUES


@dataclass
class Readiness:
    """What was checked, and why the gateway is not ready (no reasons: ready)."""

    checks: dict[str, object] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        """Whether every check passed."""
        return not self.reasons


async def check(state: GatewayState) -> Readiness:
    """Count recent worker heartbeats (instead of a `celery inspect ping`, which waits a second
    whenever no worker answers), read the queues' depth, resolve the default model."""
    found = Readiness()
    try:
        since = time.time() - 3 * state.settings.heartbeat_interval
        async with state.redis.pipeline(transaction=False) as pipe:
            pipe.zcount(WORKERS, since, "+inf")
            for queue in QUEUES:
                pipe.llen(queue)
            workers, *depths = await pipe.execute()
        # `queue_depth`: jobs waiting at any priority (what backpressure counts too).
        found.checks.update(redis="ok", workers=workers, queue_depth=sum(depths))
        if not workers:
            found.reasons.append("no worker has sent a heartbeat recently")
    except (RedisError, OSError):
        found.checks["redis"] = "unreachable"
        found.reasons.append("Redis is unreachable")
    registry = state.registry
    try:
        info = registry.resolve(registry.default)
        found.checks["model"] = f"{info.name}:{info.version}"
    except ServiceError as exc:
        found.reasons.append(f"default model {registry.default!r} unavailable: {exc.message}")
    return found
