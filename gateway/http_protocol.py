"""uvicorn's httptools protocol, with each response's header and body sent in one system call.

uvicorn writes a response's status line and headers, then its body, as two writes to the
connection's transport; with an empty buffer each write is a `send` of its own, and at 64 clients
those sends were 8 % of the gateway's CPU (py-spy). Here the writes of one turn of the event loop
are joined and sent at the end of the turn: one `send` per response, one turn (microseconds)
later. Everything else is uvicorn's own.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class TurnBufferedTransport:
    """A transport whose writes within one event-loop turn go out as one write."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        """Keep `data` until the end of this turn."""
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)

    def flush(self) -> None:
        """Send what this turn wrote (closing the connection sends it first, too)."""
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        """Send what is pending, then close (the transport itself sends its buffer first)."""
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)  # reading, flow control, addresses: as they are


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's `httptools` protocol on a `TurnBufferedTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        buffered = TurnBufferedTransport(transport, self.loop)
        super().connection_made(cast(asyncio.Transport, buffered))
