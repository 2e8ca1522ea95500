"""Several gateway processes share keep-alive connections evenly (`gateway.balance`)."""

from __future__ import annotations

import os
import socket
from collections import Counter
from pathlib import Path

from tests.integration.conftest import System, gateway_processes

CONNECTIONS = 40


def established(port: int, pids: list[int]) -> Counter[int]:
    """Established connections to `port` held by each of `pids` (from /proc: no tools needed)."""
    inodes: dict[str, int] = {}
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd) if fd.is_symlink() else ""
            if target.startswith("socket:["):
                inodes[target[8:-1]] = pid
    held: Counter[int] = Counter()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if int(local.rsplit(":", 1)[1], 16) == port and state == "01" and inode in inodes:
                held[inodes[inode]] += 1
    return held


def test_keep_alive_connections_are_spread_evenly_over_two_processes(system: System) -> None:
    with gateway_processes(system, 2) as (url, gateway):
        port = int(url.rsplit(":", 1)[1])
        children = [
            int(pid)
            for pid in Path(f"/proc/{gateway.pid}/task/{gateway.pid}/children").read_text().split()
        ]
        assert len(children) == 2
        # Opened at once, as a client's pool does: the kernel has them all queued before either
        # process accepts.
        conns = [
            socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(CONNECTIONS)
        ]
        try:
            for conn in conns:  # each connection answers (and stays open: keep-alive)
                conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
            for conn in conns:
                assert conn.recv(4096).startswith(b"HTTP/1.1 200")
            held = established(port, children)
            assert sum(held.values()) == CONNECTIONS
            # At most one more than the least busy, give or take one in flight.
            assert max(held.values()) - min(held[pid] for pid in children) <= 2, held
        finally:
            for conn in conns:
                conn.close()
