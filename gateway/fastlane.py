"""The routes that carry nearly all traffic, answered without FastAPI's per-request work.

`POST /predict`, `POST /v1/jobs`, `GET /v1/jobs/{job_id}/result` and the V2 protocol's `infer`
are most of what a busy gateway serves, and through FastAPI each spent about as much CPU again on
routing, dependency resolution and the framework's middleware layers as on its own work. The
gateway's CPU is what a one-row job waits for on a small machine: answering these routes here
took `make bench` at 64 clients on two cores from 2,108 to 3,024 `/predict` jobs/s (p99 54 to
35 ms) and from 1,901 to 2,507 submit + long-poll jobs/s (p99 64 to 48 ms); docs/benchmarks.md.

The routes stay the contract and the OpenAPI. This lane answers only a request whose every part
it can read exactly as the route would, and answers it with the route's own function: the path
matched by the route's own pattern, a valid key (or none configured), a body that `json` parses
(as Starlette does) and the route's model validates, no query parameter or header it does not
know. Any other request goes on to the app as it came, its body replayed, and gets FastAPI's
answer: every 401, 415 and 422 is the route's own. What the service raises is answered by the
app's exception handlers (`gateway.errors`), looked up the way Starlette looks them up.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import APIRouter
from fastapi.routing import APIRoute
from fastapi.security.utils import get_authorization_scheme_param
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import keys
from gateway.idempotency import KEY_PATTERN
from gateway.routes import jobs as job_routes
from gateway.routes import legacy
from gateway.routes import v2 as v2_routes
from gateway.state import GatewayState
from gateway.v2 import HEADER_LENGTH
from shared.schemas import LegacyPredictRequest, PredictRequest

# The headers this lane reads; a request that sends one of them twice is handed on.
AUTHORIZATION = b"authorization"
CONTENT_TYPE = b"content-type"
IDEMPOTENCY_KEY = b"idempotency-key"
V2_HEADER_LENGTH = HEADER_LENGTH.encode()
READ = (AUTHORIZATION, CONTENT_TYPE, IDEMPOTENCY_KEY, V2_HEADER_LENGTH)

MAX_JOB_ID = 200  # the route's `JobId` bound
WAIT = re.compile(rb"wait=([0-9]{1,2}(?:\.[0-9]{1,3})?)")  # `?wait=S`, S in [0, 30] checked after
MAX_WAIT = 30.0
Model = TypeVar("Model", bound=BaseModel)


@dataclass
class Incoming:
    """What the lane has read of one request."""

    scope: Scope
    headers: dict[bytes, bytes]
    messages: list[Message]  # as received, replayed if the request is handed on
    path_params: dict[str, str]

    @property
    def state(self) -> GatewayState:
        """The app's state (the lifespan's, or a unit test's)."""
        state: GatewayState = self.scope["app"].state.gateway
        return state

    def header(self, name: bytes) -> str | None:
        """A header the lane reads, decoded as Starlette decodes it."""
        value = self.headers.get(name)
        return None if value is None else value.decode("latin-1")

    def body(self) -> bytes:
        """The whole body."""
        return b"".join(m.get("body", b"") for m in self.messages)

    def json_body(self, model: type[Model]) -> Model | None:
        """The body as `model`, read as FastAPI reads a JSON body; None if it would not pass."""
        media = self.headers.get(CONTENT_TYPE, b"").split(b";", 1)[0].strip().lower()
        if media != b"application/json":
            return None  # none (a 415), or another one (+json too): the route decides
        try:
            return model.model_validate(json.loads(self.body()))
        except Exception:  # ValueError, ValidationError, RecursionError (deep nesting): all the
            return None  # route's to refuse, in its words


Answer = Callable[[Incoming, str], Awaitable[Response | None]]
"""A lane's answer to a request from an owner, or None (before doing anything) to hand it on."""


async def _predict(incoming: Incoming, owner: str) -> Response | None:
    body = incoming.json_body(LegacyPredictRequest)
    if body is None:
        return None
    state = incoming.state
    await state.queue_depth.check(state.redis)  # the route's `QueueHasRoom`
    return await legacy.predict_rows(state.jobs, body, owner)


async def _submit(incoming: Incoming, owner: str) -> Response | None:
    idempotency_key = incoming.header(IDEMPOTENCY_KEY)
    if idempotency_key is not None and not re.fullmatch(KEY_PATTERN, idempotency_key):
        return None
    body = incoming.json_body(PredictRequest)
    if body is None:
        return None
    state = incoming.state
    await state.queue_depth.check(state.redis)  # the route's `QueueHasRoom`
    return await job_routes.submit(state.jobs, body, owner, idempotency_key)


async def _result(incoming: Incoming, owner: str) -> Response | None:
    job_id = incoming.path_params["job_id"]
    query = incoming.scope["query_string"]
    found = WAIT.fullmatch(query) if query else None
    wait = float(found[1]) if found else 0.0
    if len(job_id) > MAX_JOB_ID or (query and found is None) or wait > MAX_WAIT:
        return None
    return await job_routes.result(incoming.state.jobs, job_id, owner, wait)


async def _infer(incoming: Incoming, owner: str) -> Response | None:
    # The V2 routes read the body as bytes: the service checks it, in the protocol's words.
    state = incoming.state
    await state.queue_depth.check(state.redis)  # the routes' `QueueHasRoom`
    name, version = incoming.path_params["name"], incoming.path_params.get("version")
    header_length = incoming.header(V2_HEADER_LENGTH)
    v2 = await v2_routes.get_v2(state)
    return await v2_routes.inferred(v2, name, version, incoming.body(), header_length, owner)


@dataclass(frozen=True)
class Lane:
    """One route served here."""

    method: str
    route: APIRoute  # the route stood in for: FastAPI puts it in the scope, the metrics read it
    answer: Answer
    reads_body: bool

    @classmethod
    def of(cls, router: APIRouter, method: str, path: str, answer: Answer, body: bool) -> Lane:
        """The lane for `router`'s route at `path` (full path) for `method`."""
        route = next(
            r
            for r in router.routes
            if isinstance(r, APIRoute) and r.path == path and method in (r.methods or ())
        )
        return cls(method, route, answer, body)

    def match(self, scope: Scope) -> dict[str, str] | None:
        """The path parameters if `scope` is a request for this route, as the router matches."""
        if scope["method"] != self.method:
            return None
        found = self.route.path_regex.match(scope["path"])
        return None if found is None else found.groupdict()


LANES = (
    Lane.of(legacy.router, "POST", "/predict", _predict, body=True),
    Lane.of(job_routes.router, "POST", "/v1/jobs", _submit, body=True),
    Lane.of(job_routes.router, "GET", "/v1/jobs/{job_id}/result", _result, body=False),
    Lane.of(v2_routes.router, "POST", "/v2/models/{name}/infer", _infer, body=True),
    Lane.of(
        v2_routes.router, "POST", "/v2/models/{name}/versions/{version}/infer", _infer, body=True
    ),
)


class FastLane:
    """Pure ASGI middleware: answers the hot routes' common requests, hands on all others."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = _lane(scope)
        if found is None:
            await self.app(scope, receive, send)
            return
        lane, path_params = found
        headers = _headers(scope)
        messages = await _read_body(receive) if lane.reads_body and headers is not None else []
        complete = not messages or messages[-1]["type"] == "http.request"
        incoming = Incoming(scope, headers or {}, messages, path_params)
        owner = None
        if headers is not None and complete:
            owner = keys.owner_for(incoming.state.settings, _bearer(incoming))
        response = None
        if owner is not None:
            try:
                response = await lane.answer(incoming, owner)
            except Exception as exc:
                response = await _handled(scope, exc)
        if response is None:
            await self.app(scope, _replay(messages, receive), send)
            return
        # What FastAPI's router would have put in the scope (the metrics label by the route).
        scope.update(route=lane.route, endpoint=lane.route.endpoint, path_params=path_params)
        await response(scope, receive, send)


def _lane(scope: Scope) -> tuple[Lane, dict[str, str]] | None:
    if scope["type"] != "http" or scope.get("root_path"):
        return None  # behind a path prefix the router's matching is left to the router
    for lane in LANES:
        path_params = lane.match(scope)
        if path_params is not None:
            return lane, path_params
    return None


def _headers(scope: Scope) -> dict[bytes, bytes] | None:
    # The headers the lanes read (names arrive lower-cased); None if one of them came twice.
    found: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        if name in READ:
            if name in found:
                return None
            found[name] = value
    return found


def _bearer(incoming: Incoming) -> str | None:
    # The key as FastAPI's `HTTPBearer(auto_error=False)` reads it.
    value = incoming.header(AUTHORIZATION)
    if value is None:
        return None
    scheme, token = get_authorization_scheme_param(value)
    return token if token and scheme.lower() == "bearer" else None


async def _read_body(receive: Receive) -> list[Message]:
    # Every message up to the body's end (or the client's leaving): kept to be replayed.
    messages = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request" or not message.get("more_body", False):
            return messages


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed


async def _handled(scope: Scope, exc: Exception) -> Response:
    # The app's handler for `exc`, by the first class of its MRO that has one (as Starlette's
    # ExceptionMiddleware looks); an error without one is raised on, as from a route.
    handlers: dict[Any, Any] = scope["app"].exception_handlers
    handler = next((handlers[c] for c in type(exc).__mro__ if c in handlers), None)
    if handler is None:
        raise exc
    response = handler(Request(scope), exc)
    if inspect.isawaitable(response):
        response = await response
    assert isinstance(response, Response)
    return response
