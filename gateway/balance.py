"""Keep-alive connections spread evenly over the gateway's processes.

With a listening socket of its own per process (SO_REUSEPORT), the kernel hashes each new
connection to one of them: even on average, uneven for the few dozen long-lived connections a
load balancer's pool or a benchmark keeps open. 64 connections over two processes split 41/23,
39/25, 36/28 in successive runs, and the busier process's clients waited longer (at 25/39: p99
69 ms against 92 ms). So the processes share one listening socket, and each accepts only while
it holds at most one connection more than the least busy of them: their counts sit in a small
array of shared memory (`Seats`), made before the fork. A process that does not publish its count
for a second (a blocked event loop) is left out of the comparison, so it cannot hold the others
back. (On one shared socket without this, the first process to wake takes nearly every
connection.)
"""

from __future__ import annotations

import asyncio
import logging
import mmap
import socket
import struct
import time
from typing import Final

import uvicorn

log = logging.getLogger(__name__)

SLACK: Final = 1
"""Connections a process may hold beyond the least busy one before it stops accepting."""
STALE_AFTER: Final = 1.0
"""Seconds without an update after which a process's count is not compared."""
TICK: Final = 0.05
"""Seconds between a process's updates of its count (connections also close between accepts)."""
RECHECK: Final = 0.002
"""Seconds a process that is over its share waits before it looks again."""
_SLOT = struct.Struct("qd")  # open connections, time.monotonic() of the update


class Seats:
    """Each gateway process's open connections, in anonymous shared memory: create it before
    forking, then `take` an index in each child."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._memory = mmap.mmap(-1, _SLOT.size * processes)  # MAP_SHARED: the fork shares it
        self.index = 0

    def take(self, index: int) -> None:
        """This process is number `index`, with no connection yet: from now on the others
        compare their counts with its own, so connections that arrive while it starts wait
        for it rather than all going to a sibling that started first (for at most
        `STALE_AFTER` if its start blocks)."""
        self.index = index
        self.publish(0)

    def publish(self, connections: int) -> None:
        """Record this process's open connections."""
        _SLOT.pack_into(self._memory, _SLOT.size * self.index, connections, time.monotonic())

    def may_accept(self, connections: int) -> bool:
        """Whether a process holding `connections` may take one more: at most `SLACK` more than
        the least busy of the others that published lately."""
        fresh = time.monotonic() - STALE_AFTER
        others = []
        for i in range(self.processes):
            count, updated = _SLOT.unpack_from(self._memory, _SLOT.size * i)
            if i != self.index and updated >= fresh:
                others.append(count)
        return not others or connections <= min(others) + SLACK


def shared_listener(host: str, port: int, backlog: int) -> socket.socket:
    """The listening socket all the gateway's processes accept from (non-blocking)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


class BalancedServer(uvicorn.Server):
    """uvicorn's server accepting from the shared `listener` while `seats` allow it; uvicorn's
    own protocol, connection tracking and graceful shutdown are unchanged."""

    def __init__(self, config: uvicorn.Config, listener: socket.socket, seats: Seats) -> None:
        super().__init__(config)
        self.listener = listener
        self.seats = seats
        self._starting = 0  # accepted, not yet handed to a protocol
        self._ticking: asyncio.TimerHandle | None = None
        self._reading = False
        self._closing = False
        self._serving: set[asyncio.Task[None]] = set()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._tick()  # while the lifespan starts, too: this process is coming
        await super().startup(sockets=[])  # the lifespan; accepting is done here
        self._read()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._closing = True
        self._unread()
        if self._ticking is not None:
            self._ticking.cancel()
        await super().shutdown(sockets=sockets)

    def _open(self) -> int:
        return len(self.server_state.connections) + self._starting

    def _tick(self) -> None:
        self.seats.publish(self._open())
        self._ticking = self._loop.call_later(TICK, self._tick)

    def _read(self) -> None:
        if not (self._reading or self._closing):
            self._loop.add_reader(self.listener.fileno(), self._accept)
            self._reading = True

    def _unread(self) -> None:
        if self._reading:
            self._loop.remove_reader(self.listener.fileno())
            self._reading = False

    def _accept(self) -> None:
        for _ in range(64):  # then let the loop serve the connections it has
            if not self.seats.may_accept(self._open()):
                # Over its share: the others take what waits; look again shortly.
                self._unread()
                self._loop.call_later(RECHECK, self._read)
                return
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return  # another process took it
            except OSError as exc:  # out of file descriptors, say: do not spin on it
                log.warning("accept failed: %s", exc)
                self._unread()
                self._loop.call_later(0.1, self._read)
                return
            self._starting += 1
            self.seats.publish(self._open())
            task = self._loop.create_task(self._connect(conn))
            self._serving.add(task)
            task.add_done_callback(self._serving.discard)

    async def _connect(self, conn: socket.socket) -> None:
        config = self.config
        try:
            await self._loop.connect_accepted_socket(
                lambda: config.http_protocol_class(  # type: ignore[call-arg]
                    # as uvicorn's own `startup` makes it
                    config=config,
                    server_state=self.server_state,
                    app_state=self.lifespan.state,
                ),
                conn,
            )
        except OSError:
            conn.close()
        finally:
            self._starting -= 1
