"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from gateway import examples as ex
from gateway import readiness
from gateway.deps import StateDep

router = APIRouter(tags=["health"])


@router.get("/healthz", responses={200: ex.answer("Alive.", {"status": "ok"})})
async def healthz() -> dict[str, str]:
    """The process is alive (no dependency is checked)."""
    # async: a plain `def` route runs in the thread pool, a thread hop per probe.
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={
        200: ex.answer("Ready, with what was checked.", ex.READY),
        503: ex.answer("Not ready; `reasons` says why.", ex.NOT_READY),
    },
)
async def readyz(state: StateDep) -> JSONResponse:
    """Ready when Redis answers, a worker beat recently and the default model exists."""
    found = await readiness.check(state)
    status = "ready" if found.ready else "not ready"
    body = {"status": status, "checks": found.checks, "reasons": found.reasons}
    return JSONResponse(body, status_code=200 if found.ready else 503)
