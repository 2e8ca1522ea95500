"""The gateway's HTTP protocol sends the writes of one event-loop turn as one write."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import uvicorn

from gateway.http_protocol import HttpProtocol, TurnBufferedTransport


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


@pytest.mark.anyio
async def test_one_turn_s_writes_go_out_together_at_its_end() -> None:
    real = FakeTransport()
    buffered = TurnBufferedTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    buffered.write(b"HTTP/1.1 200 OK\r\n\r\n")
    buffered.write(b"body")
    assert real.writes == []
    await asyncio.sleep(0)
    assert real.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
    buffered.write(b"next")
    await asyncio.sleep(0)
    assert real.writes[1:] == [b"next"]
    assert buffered.get_extra_info("peername") == "info:peername"


@pytest.mark.anyio
async def test_closing_sends_what_is_pending_first_and_nothing_after() -> None:
    real = FakeTransport()
    buffered = TurnBufferedTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    buffered.write(b"last answer")
    buffered.close()
    assert real.writes == [b"last answer"] and real.closed
    buffered.write(b"too late")
    await asyncio.sleep(0)
    assert real.writes == [b"last answer"]


async def _app(scope: dict[str, object], receive: object, send: object) -> None:
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
    await send({"type": "http.response.body", "body": b"a", "more_body": True})  # type: ignore[operator]
    await send({"type": "http.response.body", "body": b"b"})  # type: ignore[operator]


@pytest.mark.anyio
async def test_a_real_server_answers_whole_on_keep_alive_connections() -> None:
    config = uvicorn.Config(_app, host="127.0.0.1", port=0, http=HttpProtocol, log_config=None)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(200):  # bounded: until the socket listens
        if server.started:
            break
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            answers = [await client.get("/") for _ in range(3)]  # one connection, kept alive
        assert [(a.status_code, a.content) for a in answers] == [(200, b"ab")] * 3
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
