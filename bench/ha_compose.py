"""The replicated Redis of `docker-compose.ha.yaml`, acted on through the Docker CLI.

The same operations as `devrun.sentinel.ReplicatedRedis` (who is master, kill, pause, wait for the
failover, wait until the replica is in sync), so the HA drill runs the same scenarios on local
processes or on containers. Nothing here opens a socket: every question to a node or a sentinel
is `redis-cli` run inside its own container (`docker exec`), and the only address the host side
ever uses is the gateway's port on 127.0.0.1.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

MASTER_NAME = "mymaster"
NODES = ("redis", "redis-replica")
SENTINELS = ("sentinel-1", "sentinel-2", "sentinel-3")
QUORUM = 2


@dataclass(frozen=True)
class ContainerNode:
    """A data node: its compose service and its fixed address on the compose network (which the
    sentinels name it by)."""

    name: str
    ip: str


def run(argv: list[str], timeout: float = 60) -> str:
    """`argv`'s output; raises with its stderr when it fails."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv[:8])}: exit {done.returncode}: {done.stderr[-800:]}")
    return done.stdout


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.2)


@dataclass
class ComposeRedis:
    """Master, replica and sentinels of one compose project (`compose` = its CLI argv)."""

    compose: list[str]
    network: str
    nodes: list[ContainerNode] = field(default_factory=list)
    _ids: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for service in NODES:
            env = run(
                ["docker", "inspect", "--format", "{{json .Config.Env}}", self.container(service)]
            )
            ip = next(v[5:] for v in json.loads(env) if v.startswith("NODE="))
            self.nodes.append(ContainerNode(service, ip))

    def container(self, service: str) -> str:
        """The service's one container id (also when stopped), looked up once."""
        if service not in self._ids:
            ids = run([*self.compose, "ps", "--all", "--quiet", service]).split()
            if len(ids) != 1:
                raise RuntimeError(f"{service}: expected one container, found {len(ids)}")
            self._ids[service] = ids[0]
        return self._ids[service]

    def cli(self, service: str, *args: str, port: int = 6379, timeout: float = 5) -> str:
        """`redis-cli --raw ARGS` inside the service's container."""
        argv = ["docker", "exec", self.container(service), "timeout", str(timeout)]
        argv += ["redis-cli", "-p", str(port), "--raw", *args]
        return run(argv, timeout + 10)

    def _ask(self, sentinel: str, *args: str) -> str:
        return self.cli(sentinel, "sentinel", *args, MASTER_NAME, port=26379)

    def master_name(self) -> str | None:
        """The master's address as a quorum of sentinels gives it (None while they disagree)."""
        seen: list[str] = []
        for sentinel in SENTINELS:
            try:
                reply = self._ask(sentinel, "get-master-addr-by-name").split()
            except (RuntimeError, subprocess.TimeoutExpired):
                continue
            if reply:
                seen.append(reply[0])
        best = Counter(seen).most_common(1)
        return best[0][0] if best and best[0][1] >= QUORUM else None

    def node(self, ip: str | None) -> ContainerNode | None:
        return next((node for node in self.nodes if node.ip == ip), None)

    def master(self) -> ContainerNode:
        ip = self.master_name()
        node = self.node(ip)
        if node is None:
            raise RuntimeError(f"no master agreed on by the sentinels (saw {ip!r})")
        return node

    def running(self, node: ContainerNode) -> bool:
        state = run(
            ["docker", "inspect", "--format", "{{.State.Status}}", self.container(node.name)]
        )
        return state.strip() == "running"

    def kill(self, node: ContainerNode) -> None:
        """SIGKILL the node's container: no shutdown, no last AOF write."""
        run(["docker", "kill", "--signal", "KILL", self.container(node.name)])

    def pause(self, node: ContainerNode) -> None:
        run(["docker", "pause", self.container(node.name)])

    def resume(self, node: ContainerNode) -> None:
        run(["docker", "unpause", self.container(node.name)])

    def start_node(self, node: ContainerNode, replica_of: ContainerNode | None) -> None:
        """Start a killed node again, as its restart policy would (if it has not already): its
        entrypoint asks the sentinels for the master and joins it as a replica."""
        del replica_of  # the node finds the master itself
        if not self.running(node):
            run(["docker", "start", self.container(node.name)])

    def cut(self, node: ContainerNode) -> None:
        """Take the node off the compose network: packets to it are dropped, not refused."""
        run(["docker", "network", "disconnect", "--force", self.network, self.container(node.name)])

    def reconnect(self, node: ContainerNode) -> None:
        argv = ["docker", "network", "connect", "--ip", node.ip, "--alias", node.name]
        run([*argv, self.network, self.container(node.name)])

    def wait_for_new_master(self, old: ContainerNode, timeout: float = 60.0) -> ContainerNode:
        """Block until the sentinels agree on a master other than `old`; returns it."""
        wait_until(
            lambda: self.master_name() not in (None, old.ip), timeout, "the sentinels' failover"
        )
        return self.master()

    def info(self, node: ContainerNode) -> dict[str, str]:
        """The node's INFO replication as a dict (empty when it does not answer)."""
        try:
            text = self.cli(node.name, "info", "replication", timeout=3)
        except (RuntimeError, subprocess.TimeoutExpired):
            return {}
        pairs = (line.strip().split(":", 1) for line in text.splitlines() if ":" in line)
        return {key: value for key, value in pairs}

    def role(self, node: ContainerNode) -> str:
        return self.info(node).get("role", "down")

    def wait_in_sync(self, timeout: float = 90.0) -> None:
        """Block until every data node runs, the master has all others online as replicas, and
        every sentinel knows them: the state each drill run starts from."""
        wait_until(self._in_sync, timeout, "the replica in sync and the sentinels agreeing")

    def _in_sync(self) -> bool:
        master = self.node(self.master_name())
        if master is None:
            return False
        info = self.info(master)
        online = [v for k, v in info.items() if k.startswith("slave") and "state=online" in v]
        if info.get("role") != "master" or len(online) < len(self.nodes) - 1:
            return False
        try:
            known = [self._ask(s, "replicas").splitlines().count("ip") for s in SENTINELS]
        except (RuntimeError, subprocess.TimeoutExpired):
            return False
        return min(known) >= len(self.nodes) - 1
