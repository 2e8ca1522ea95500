"""The body limit counts bytes whenever Transfer-Encoding is present, and the server that feeds
it is always httptools (which refuses Content-Length together with Transfer-Encoding)."""

from __future__ import annotations

from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.__main__ import config
from gateway.limits import BodyLimit
from shared.settings import Settings


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def read_all(scope: Any, receive: Any, send: Any) -> None:
    """An app that reads the whole body, then answers 200."""
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


@pytest.mark.anyio
@pytest.mark.parametrize("encoding", [b"chunked", b"gzip, chunked", b"Chunked"])
async def test_a_small_content_length_with_transfer_encoding_still_counts_the_body(
    encoding: bytes,
) -> None:
    limit, chunk, chunks = 4096, b"x" * 1000, 10
    messages = [{"type": "http.request", "body": chunk, "more_body": True}] * chunks
    messages.append({"type": "http.request", "body": b"", "more_body": False})
    feed = iter(messages)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(feed)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "path": "/v1/jobs",
        "headers": [(b"content-length", b"2"), (b"transfer-encoding", encoding)],
    }
    await BodyLimit(read_all, default=limit, per_path={})(scope, receive, send)
    assert sent[0]["status"] == 413
    # It stopped reading right after passing the limit, not at the end of the body.
    assert len(list(feed)) == chunks + 1 - (limit // len(chunk) + 1)


def test_the_gateway_always_parses_http_with_httptools() -> None:
    cfg = config(Settings())
    cfg.load()
    assert issubclass(cfg.http_protocol_class, HttpToolsProtocol)
    assert isinstance(cfg, uvicorn.Config)
