"""The one place errors become HTTP: a status per error class, one problem-details body."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException

from shared.errors import (
    AliasNotFound,
    InvalidInput,
    JobConflict,
    JobNotFound,
    MalformedRequest,
    ModelError,
    ModelNotFound,
    QueueUnavailable,
    RateLimited,
    ServiceError,
    UnsupportedModelFormat,
    UploadStalled,
)

log = logging.getLogger(__name__)
Handler = Callable[[Request, Exception], Awaitable[Response]]

STATUS_BY_ERROR: dict[type[ServiceError], int] = {
    InvalidInput: 422,
    UnsupportedModelFormat: 415,
    MalformedRequest: 400,
    ModelNotFound: 422,  # the model is a field of the request body
    JobNotFound: 404,
    AliasNotFound: 404,
    JobConflict: 409,
    ModelError: 503,
    QueueUnavailable: 503,
    UploadStalled: 408,
    RateLimited: 429,
}
RETRY_AFTER = 5


def problem(
    status: int, title: str, detail: str, extra: dict[str, Any] | None = None
) -> JSONResponse:
    """An RFC 9457 problem-details response; `extra` members cannot shadow the standard ones."""
    body = {
        **(extra or {}),
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
    }
    headers = {"Retry-After": str(RETRY_AFTER)} if status == 503 else None
    return JSONResponse(
        body, status_code=status, headers=headers, media_type="application/problem+json"
    )


async def service_error(_: Request, exc: Exception) -> JSONResponse:
    """Any `ServiceError`, by the first class of its MRO that has a status."""
    assert isinstance(exc, ServiceError)
    status = next(STATUS_BY_ERROR[c] for c in type(exc).__mro__ if c in STATUS_BY_ERROR)
    response = problem(status, type(exc).__name__, exc.message, exc.details)
    if isinstance(exc, QueueUnavailable | RateLimited):
        response.headers["Retry-After"] = str(exc.retry_after)
    response.headers.update(exc.headers)
    return response


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    """Schema errors, with every location spelled as row and column."""
    assert isinstance(exc, RequestValidationError)
    if _json_body_expected(exc) and not _is_json(request.headers.get("content-type", "")):
        return problem(
            415,
            "UnsupportedMediaType",
            "send the body as JSON with Content-Type: application/json",
        )
    errors: list[dict[str, Any]] = [
        {"loc": list(e["loc"]), "msg": _message(e)} for e in exc.errors()
    ][:20]
    detail = "; ".join(f"{where(e['loc'])}: {e['msg']}" for e in errors[:5])
    return problem(422, "InvalidInput", detail or "invalid request", {"errors": errors})


def _json_body_expected(exc: RequestValidationError) -> bool:
    # A JSON route that got no JSON object at all: FastAPI reports it as a type error on "body".
    return any(tuple(e["loc"]) == ("body",) for e in exc.errors()) and not any(
        e["loc"][:1] == ("body",) and len(e["loc"]) > 1 for e in exc.errors()
    )


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _message(error: Any) -> str:
    if error.get("type") == "json_invalid":  # say what is wrong with the JSON, not just that it is
        return f"invalid JSON: {error.get('ctx', {}).get('error', 'cannot be parsed')}"
    return str(error["msg"])


async def redis_unavailable(_: Request, exc: Exception) -> JSONResponse:
    """Redis or the broker is down or too slow: a 503 the client can retry, never a 500."""
    log.warning("queue unavailable: %s", type(exc).__name__)  # the message may hold the URL
    return problem(503, "QueueUnavailable", "the job queue is unavailable; retry shortly")


async def http_error(_: Request, exc: Exception) -> JSONResponse:
    """Starlette's own errors (unknown route, wrong method, body too large) as problems too."""
    assert isinstance(exc, HTTPException)
    response = problem(exc.status_code, _TITLES.get(exc.status_code, "HTTPError"), str(exc.detail))
    response.headers.update(exc.headers or {})
    return response


_TITLES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    408: "RequestTimeout",
    405: "MethodNotAllowed",
    413: "PayloadTooLarge",
    415: "UnsupportedMediaType",
    429: "TooManyRequests",
}


def where(loc: list[Any]) -> str:
    """`["body", "data", 2, 5]` as `data: row 2, column 5`."""
    names = [str(p) for p in loc if p != "body"]
    if loc[:1] == ["body"] and len(names) == 1 and names[0].isdigit():
        return f"body, character {names[0]}"  # where the JSON could not be parsed
    if len(names) >= 2 and names[0] == "data" and names[1].isdigit():
        place = f"row {names[1]}" + (f", column {names[2]}" if len(names) > 2 else "")
        return f"data: {place}"
    return ".".join(names) or "body"


# The Open Inference Protocol's paths answer errors as `{"error": "..."}` (its clients read that),
# with its codes: a bad tensor is a 400, an unknown model in the path a 404.
V2_PREFIX = "/v2/"
V2_STATUS = {"InvalidInput": 400, "ModelNotFound": 404, "UnsupportedMediaType": 400}


def per_protocol(handler: Handler) -> Handler:
    """`handler`, answering in the V2 protocol's error format under `/v2/`."""

    async def handle(request: Request, exc: Exception) -> Response:
        response = await handler(request, exc)
        if not request.url.path.startswith(V2_PREFIX):
            return response
        problem_body = orjson.loads(bytes(response.body))
        status = V2_STATUS.get(problem_body.get("title", ""), response.status_code)
        headers = {k: v for k, v in response.headers.items() if k.lower() in _KEPT_HEADERS}
        return JSONResponse({"error": problem_body.get("detail", "")}, status, headers)

    return handle


_KEPT_HEADERS = {"retry-after", "www-authenticate", "ratelimit", "ratelimit-policy"}


def install(app: FastAPI) -> None:
    """Register the handlers on `app`."""
    app.add_exception_handler(ServiceError, per_protocol(service_error))
    app.add_exception_handler(RequestValidationError, per_protocol(validation_error))
    app.add_exception_handler(HTTPException, per_protocol(http_error))
    app.add_exception_handler(RedisError, per_protocol(redis_unavailable))
    app.add_exception_handler(OperationalError, per_protocol(redis_unavailable))
