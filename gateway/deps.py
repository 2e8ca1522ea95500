"""Request dependencies as `Annotated` aliases over the typed lifespan state.

Unit tests put their own state on `app.state.gateway` (the lifespan does not run for them). The
dependencies are `async def` on purpose: FastAPI runs a plain `def` dependency in the thread
pool, a thread hop per dependency per request that cost the hot routes ~15 % of the gateway's
CPU.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException

from gateway import keys
from gateway.jobs import Jobs
from gateway.state import GatewayState


def _gateway(request: Request) -> GatewayState:
    # The state the lifespan opened (unit tests set their own). Read directly by each
    # dependency rather than through a shared `get_state` sub-dependency: FastAPI resolves
    # every node of the dependency graph per request, and those extra nodes cost the hot
    # routes about a tenth of the gateway's CPU.
    state: GatewayState = request.app.state.gateway
    return state


async def get_state(request: Request) -> GatewayState:
    """The state opened by the app's lifespan."""
    return _gateway(request)


StateDep = Annotated[GatewayState, Depends(get_state)]


async def get_jobs(request: Request) -> Jobs:
    """The jobs service."""
    return _gateway(request).jobs


_bearer = HTTPBearer(auto_error=False, description="An API key, when `MLQUEUE_API_KEYS` is set.")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def get_owner(request: Request, credentials: Credentials) -> str:
    """Who is calling: the id of a valid API key ("" when keys are off); 401 otherwise.

    Jobs are visible only to their owner. Routers that need a key depend on this function, so
    it runs once per request (FastAPI caches a dependency within a request).
    """
    token = credentials.credentials if credentials else None
    owner = keys.owner_for(_gateway(request).settings, token)
    if owner is None:
        raise HTTPException(
            401,
            "a valid API key is required: Authorization: Bearer <key>",
            {"WWW-Authenticate": "Bearer"},
        )
    return owner


async def get_admin(request: Request, credentials: Credentials) -> str:
    """The id of the admin key calling (401 without a valid key, 403 with a non-admin one).

    With no keys configured at all (`make run`, local use) the gateway is open and so are the
    admin routes (the caller's id is ""); with API keys but no `MLQUEUE_ADMIN_KEYS` they are
    refused: turning keys on must never leave model changes open to every key.
    """
    settings = _gateway(request).settings
    if not settings.api_keys and not settings.admin_keys:
        return ""
    owner = await get_owner(request, credentials)
    found = keys.match(credentials.credentials, settings.admin_keys) if credentials else None
    if found is None:
        hint = "" if settings.admin_keys else " (none is configured: MLQUEUE_ADMIN_KEYS)"
        raise HTTPException(403, f"this route needs an admin key{hint}; key {owner} is not one")
    return keys.owner_id(found)


async def metrics_access(request: Request, credentials: Credentials) -> None:
    """`/metrics` needs a key like `/v1`, unless `MLQUEUE_METRICS_PUBLIC` opens it."""
    if not _gateway(request).settings.metrics_public:
        await get_owner(request, credentials)


async def queue_has_room(request: Request) -> None:
    """503 with Retry-After when the queue is deeper than `MLQUEUE_MAX_QUEUE_DEPTH`."""
    state = _gateway(request)
    await state.queue_depth.check(state.redis)


JobsDep = Annotated[Jobs, Depends(get_jobs)]
OwnerDep = Annotated[str, Depends(get_owner)]
AdminDep = Annotated[str, Depends(get_admin)]
QueueHasRoom = Depends(queue_has_room)
