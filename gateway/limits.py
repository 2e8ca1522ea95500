"""Request body limits, enforced before the body is read: a 413 instead of a full buffer."""

from __future__ import annotations

import re
from collections.abc import Sequence

import orjson
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(HTTPException):
    """Raised when a streamed body passes its limit (FastAPI lets HTTP errors through)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds the limit of {limit} bytes")


class BodyLimit:
    """Pure ASGI middleware: refuses bodies larger than a per-path limit (header or stream)."""

    def __init__(
        self,
        app: ASGIApp,
        default: int,
        per_path: dict[str, int],
        per_pattern: Sequence[tuple[re.Pattern[str], int]] = (),
    ) -> None:
        self.app = app
        self.default = default
        self.per_path = per_path
        self.per_pattern = per_pattern  # paths with parameters (`/v1/models/{name}/versions`)

    def _limit(self, path: str) -> int:
        if path in self.per_path:
            return self.per_path[path]
        return next((n for p, n in self.per_pattern if p.fullmatch(path)), self.default)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope["path"])
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        # With Transfer-Encoding the body is read by its framing, whatever Content-Length says
        # (a parser that accepts both would let a small Content-Length front a huge body): count.
        chunked = any(k == b"transfer-encoding" for k, _ in scope["headers"])
        if length is not None and not chunked:
            if not length.isdigit() or int(length) > limit:
                await _reject(send, limit)
            else:  # the server delivers exactly Content-Length bytes: nothing left to count
                await self.app(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(limit)
            return message

        started = False

        async def tracking(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, tracking)
        except BodyTooLarge:
            if not started:
                await _reject(send, limit)


async def _reject(send: Send, limit: int) -> None:
    body = orjson.dumps(
        {
            "type": "about:blank",
            "title": "PayloadTooLarge",
            "status": 413,
            "detail": f"request body exceeds the limit of {limit} bytes",
        }
    )
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
