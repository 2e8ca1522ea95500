"""A TCP relay on 127.0.0.1 that can stop forwarding without closing: a network partition.

A partition drops packets; it does not close connections. Two Redis nodes on one host cannot be
partitioned by the network, so the HA drill puts this relay on the replica's link to its master
and `hold`s it: both ends keep an open connection, nothing gets through, and the master keeps
counting the replica as connected until `min-replicas-max-lag` passes. `stop` then closes every
connection, dropping whatever was held (as a partition's lost packets).
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading

from devrun import processes


class Relay:
    """Forwards connections from `port` to 127.0.0.1:`target`, until held or stopped."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = processes.free_port()
        self._held = threading.Event()
        self._stopped = threading.Event()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.2)

    def start(self) -> Relay:
        threading.Thread(target=self._accept, name="relay-accept", daemon=True).start()
        return self

    def hold(self) -> None:
        """Stop forwarding in both directions; connections stay open."""
        self._held.set()

    def stop(self) -> None:
        """Close the listener and every connection, dropping what was held."""
        self._stopped.set()
        for sock in [self._listener, *self._sockets]:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=2)
            except OSError:
                client.close()
                continue
            self._sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        # Bounded by `stop`: every wait below is at most 0.2 s.
        with contextlib.suppress(OSError, ValueError):
            while not self._stopped.is_set():
                if self._held.is_set():
                    self._stopped.wait(0.2)
                    continue
                ready, _, _ = select.select([src], [], [], 0.2)
                if not ready:
                    continue
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.close()
