"""Liveness and readiness probes."""

from __future__ import annotations

import time

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from gateway import examples as ex
from gateway.deps import RedisDep, RegistryDep, SettingsDep
from shared.errors import ServiceError
from shared.jobstore import WORKERS
from shared.tasks import QUEUE

router = APIRouter(tags=["health"])


@router.get("/healthz", responses={200: ex.answer("Alive.", {"status": "ok"})})
def healthz() -> dict[str, str]:
    """The process is alive (no dependency is checked)."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={
        200: ex.answer("Ready, with what was checked.", ex.READY),
        503: ex.answer("Not ready; `reasons` says why.", ex.NOT_READY),
    },
)
async def readyz(redis: RedisDep, registry: RegistryDep, settings: SettingsDep) -> JSONResponse:
    """Ready when Redis answers, a worker beat recently and the default model exists."""
    reasons: list[str] = []
    checks: dict[str, object] = {}
    try:
        since = time.time() - 3 * settings.heartbeat_interval
        async with redis.pipeline(transaction=False) as pipe:
            pipe.zcount(WORKERS, since, "+inf")
            pipe.llen(QUEUE)
            workers, depth = await pipe.execute()
        checks.update(redis="ok", workers=workers, queue_depth=depth)
        if not workers:
            reasons.append("no worker has sent a heartbeat recently")
    except (RedisError, OSError):
        checks["redis"] = "unreachable"
        reasons.append("Redis is unreachable")
    try:
        info = registry.resolve(registry.default)
        checks["model"] = f"{info.name}:{info.version}"
    except ServiceError as exc:
        reasons.append(f"default model {registry.default!r} unavailable: {exc.message}")
    ready = not reasons
    body = {"status": "ready" if ready else "not ready", "checks": checks, "reasons": reasons}
    return JSONResponse(body, status_code=200 if ready else 503)
