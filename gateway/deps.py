"""Request dependencies as `Annotated` aliases over the typed lifespan state.

Tests swap the whole state through `app.dependency_overrides[get_state]`. The dependencies are
`async def` on purpose: FastAPI runs a plain `def` dependency in the thread pool, a thread hop
per dependency per request that cost the hot routes ~15 % of the gateway's CPU.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException

from gateway import keys
from gateway.jobs import Jobs
from gateway.state import GatewayState


async def get_state(request: Request) -> GatewayState:
    """The state opened by the app's lifespan."""
    state: GatewayState = request.app.state.gateway
    return state


StateDep = Annotated[GatewayState, Depends(get_state)]


async def get_jobs(state: StateDep) -> Jobs:
    """The jobs service."""
    return state.jobs


_bearer = HTTPBearer(auto_error=False, description="An API key, when `MLQUEUE_API_KEYS` is set.")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def get_owner(state: StateDep, credentials: Credentials) -> str:
    """Who is calling: the id of a valid API key ("" when keys are off); 401 otherwise.

    Jobs are visible only to their owner. Routers that need a key depend on this function, so
    it runs once per request (FastAPI caches a dependency within a request).
    """
    digests = state.settings.api_keys + state.settings.admin_keys
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


async def require_admin(state: StateDep, credentials: Credentials) -> str:
    """An admin key's owner id (`MLQUEUE_ADMIN_KEYS`): 401 without a valid key, 403 for a key
    that is not an admin's. With keys off altogether (local use) everyone is let in."""
    settings = state.settings
    if not settings.api_keys and not settings.admin_keys:
        return ""
    await get_owner(state, credentials)  # the 401 for no key or an unknown one
    found = keys.match(credentials.credentials, settings.admin_keys) if credentials else None
    if found is None:
        raise HTTPException(403, "this needs an admin key (one listed in MLQUEUE_ADMIN_KEYS)")
    return keys.owner_id(found)


async def metrics_access(state: StateDep, credentials: Credentials) -> None:
    """`/metrics` needs a key like `/v1`, unless `MLQUEUE_METRICS_PUBLIC` opens it."""
    if not state.settings.metrics_public:
        await get_owner(state, credentials)


async def queue_has_room(state: StateDep) -> None:
    """503 with Retry-After when the queue is deeper than `MLQUEUE_MAX_QUEUE_DEPTH`."""
    await state.queue_depth.check(state.redis)


JobsDep = Annotated[Jobs, Depends(get_jobs)]
OwnerDep = Annotated[str, Depends(get_owner)]
AdminDep = Annotated[str, Depends(require_admin)]
QueueHasRoom = Depends(queue_has_room)
