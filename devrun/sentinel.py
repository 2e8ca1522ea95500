"""A replicated Redis on 127.0.0.1 for the HA drill and tests: master, replica, three sentinels.

The same shape as `docker-compose.ha.yaml`: AOF on both data nodes, `min-replicas-to-write 1`
so that a master cut off from its replica refuses writes, quorum 2 of 3 sentinels. Every node is
its own process group (`devrun.processes.spawn`), so a drill can SIGKILL or SIGSTOP the master.
A node restarted after a failover asks the sentinels who the master is and comes back as its
replica, as the compose entrypoint does: that is what a restart policy gives in production.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

from devrun import processes

MASTER_NAME = "mymaster"


@dataclass
class Node:
    """One redis-server (data node) of the set."""

    name: str
    port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def client(self, timeout: float = 2.0) -> Redis:
        return Redis(host="127.0.0.1", port=self.port, socket_timeout=timeout)


@dataclass
class ReplicatedRedis:
    """Master + replica(s) + sentinels on free ports, logs and data under `workdir`."""

    workdir: Path
    replicas: int = 1
    sentinels: int = 3
    quorum: int = 2
    down_after_ms: int = 1500
    failover_timeout_ms: int = 6000
    max_lag: int = 3  # seconds: past it, a master without a replica ack refuses writes
    nodes: list[Node] = field(default_factory=list)
    sentinel_ports: list[int] = field(default_factory=list)
    sentinel_procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def sentinel_addresses(self) -> str:
        """The value of `MLQUEUE_REDIS_SENTINELS`."""
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    def start(self) -> ReplicatedRedis:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.nodes = [
            Node(f"redis{i}", processes.free_port(), self.workdir / f"redis{i}")
            for i in range(1 + self.replicas)
        ]
        master = self.nodes[0]
        self.start_node(master, replica_of=None)
        for node in self.nodes[1:]:
            self.start_node(node, replica_of=master)
        processes.wait_until(lambda: self._in_sync(master), 20, "replicas in sync", master.proc)
        self.sentinel_ports = [processes.free_port() for _ in range(self.sentinels)]
        for i, port in enumerate(self.sentinel_ports):
            self.sentinel_procs.append(self._start_sentinel(i, port, master))
        processes.wait_until(self._sentinels_agree, 20, "sentinels see every node")
        return self

    def start_node(self, node: Node, replica_of: Node | None) -> None:
        """(Re)start a data node; as a replica of `replica_of` if given."""
        extra: list[str] = [
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--min-replicas-to-write", "1",
            "--min-replicas-max-lag", str(self.max_lag),
            "--repl-diskless-sync", "yes",
            "--repl-diskless-sync-delay", "0",
        ]  # fmt: skip
        if replica_of is not None:
            extra += ["--replicaof", "127.0.0.1", str(replica_of.port)]
        node.proc = processes.start_redis(
            node.port, node.workdir, log=self.workdir / f"{node.name}.log", extra=extra
        )

    def _start_sentinel(self, index: int, port: int, master: Node) -> subprocess.Popen[bytes]:
        conf = self.workdir / f"sentinel{index}.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {self.workdir}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master.port} {self.quorum}\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}\n"
            f"sentinel failover-timeout {MASTER_NAME} {self.failover_timeout_ms}\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n"
        )
        argv = [processes.redis_server_binary(), str(conf), "--sentinel"]
        proc = processes.spawn(argv, log=self.workdir / f"sentinel{index}.log")
        processes.wait_until(
            lambda: not processes.port_is_free(port), 10, f"sentinel on {port}", proc
        )
        return proc

    def sentinel(self, index: int = 0) -> Redis:
        return Redis(host="127.0.0.1", port=self.sentinel_ports[index], socket_timeout=2)

    def _ask(self, index: int, command: str) -> Any:
        """`SENTINEL <command> <master name>` on sentinel `index`."""
        with self.sentinel(index) as client:
            return client.execute_command("SENTINEL", command, MASTER_NAME)

    def master_port(self) -> int | None:
        """The master's port as a majority of the sentinels report it (None if they disagree)."""
        seen: list[int] = []
        for i in range(len(self.sentinel_ports)):
            with contextlib.suppress(RedisError, OSError):
                reply = self._ask(i, "GET-MASTER-ADDR-BY-NAME")
                if reply:
                    seen.append(int(reply[1]))
        best = max(set(seen), key=seen.count, default=None)
        return best if best is not None and seen.count(best) >= self.quorum else None

    def master(self) -> Node:
        port = self.master_port()
        found = [node for node in self.nodes if node.port == port]
        if not found:
            raise RuntimeError(f"no master agreed on by the sentinels (saw port {port})")
        return found[0]

    def kill(self, node: Node) -> None:
        """SIGKILL a data node (no shutdown, no last AOF rewrite)."""
        assert node.proc is not None
        os.killpg(node.proc.pid, signal.SIGKILL)
        node.proc.wait(10)
        node.proc = None

    def pause(self, node: Node) -> None:
        assert node.proc is not None
        os.killpg(node.proc.pid, signal.SIGSTOP)

    def resume(self, node: Node) -> None:
        assert node.proc is not None
        os.killpg(node.proc.pid, signal.SIGCONT)

    def wait_for_new_master(self, old: Node, timeout: float = 30.0) -> Node:
        """Block until the sentinels agree on a master other than `old`; returns it."""
        processes.wait_until(
            lambda: self.master_port() not in (None, old.port), timeout, "sentinel failover"
        )
        return self.master()

    def role(self, node: Node) -> str:
        try:
            info = node.client().info("replication")
        except (RedisError, OSError):
            return "down"
        return str(info.get("role", "?"))

    def wait_in_sync(self, timeout: float = 30.0) -> None:
        """Block until the master has every replica attached and acknowledging."""
        processes.wait_until(lambda: self._in_sync(self.master()), timeout, "replicas in sync")

    def _in_sync(self, master: Node) -> bool:
        try:
            info = master.client().info("replication")
        except (RedisError, OSError):
            return False
        online = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
        live = sum(1 for node in self.nodes if node.proc is not None) - 1
        return len([s for s in online if s.get("state") == "online"]) >= live

    def _sentinels_agree(self) -> bool:
        for i in range(len(self.sentinel_ports)):
            try:
                replicas, sentinels = self._ask(i, "REPLICAS"), self._ask(i, "SENTINELS")
            except (RedisError, OSError):
                return False
            if len(replicas) < self.replicas or len(sentinels) < len(self.sentinel_ports) - 1:
                return False
        return True

    def stop(self) -> None:
        procs: Sequence[subprocess.Popen[bytes] | None] = [
            *self.sentinel_procs,
            *(node.proc for node in self.nodes),
        ]
        for proc in procs:
            if proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGCONT)  # a paused node must be able to exit
                processes.stop(proc)
        self.sentinel_procs.clear()
        for node in self.nodes:
            node.proc = None

    def revive(self, node: Node, timeout: float = 30.0) -> None:
        """Restart a killed node as a replica of the current master and wait until in sync."""
        started = time.monotonic()
        self.start_node(node, replica_of=self.master())
        self.wait_in_sync(max(1.0, timeout - (time.monotonic() - started)))
