"""The HA drill on containers: `make drill-ha` (and a short run inside `make test-docker`).

`.ci/docker-stack drill-ha` (or `test`) built the images and started docker-compose.yaml +
docker-compose.ha.yaml + docker-compose.drill.yaml: master `redis`, `redis-replica`, three
sentinels, the gateway and the worker(s), all configured with the sentinels. The scenarios are
those of `bench.drill_ha`, with the faults dealt by the Docker CLI:

  kill       `docker kill --signal KILL` the current master's container and start it again at
             once (what a restart policy does after a crash); its entrypoint waits while the
             sentinels promote the replica, then joins the new master as a replica.
  partition  `docker pause` the master past down-after-milliseconds; failover; `docker unpause`:
             the old master must come back as a replica.
  lag        the replica is taken off the compose network (`docker network disconnect`: packets
             to it are dropped, the master's link to it stays open), 2 s of load, the master is
             killed, the replica reconnected and promoted. With `WAIT` nothing is accepted while
             the link is cut; with `MLQUEUE_REPLICA_WAIT=false` (gateway and workers recreated
             with it) the jobs accepted then are lost: the contrast.

The drill's model (`tally`, the row sum, logging every prediction to count duplicates) is copied
into the stack's model volume; its log is a directory shared with the workers
(`DRILL_HA_DIR`, mounted at /drill). The host reaches the stack only at the gateway's port on
127.0.0.1; `docker exec` asks the nodes and sentinels themselves.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any, Protocol

import httpx

from bench.drill_ha import HaDrill, Load
from bench.ha_compose import ComposeRedis, run, wait_until

CONTAINER_DIR = "/drill"  # DRILL_HA_DIR inside the worker containers (docker-compose.drill.yaml)


class Cluster(Protocol):
    """What the drill does to a replicated Redis: local processes or containers."""

    def master(self) -> Any: ...
    def kill(self, node: Any) -> None: ...
    def pause(self, node: Any) -> None: ...
    def resume(self, node: Any) -> None: ...
    def start_node(self, node: Any, replica_of: Any) -> None: ...
    def wait_for_new_master(self, old: Any, timeout: float = ...) -> Any: ...
    def role(self, node: Any) -> str: ...
    def wait_in_sync(self, timeout: float = ...) -> None: ...


class ContainerDrill(HaDrill):
    """The drill against the running compose stack described by the environment that
    `.ci/docker-stack` exports (TEST_DOCKER_URL, _KEY, _COMPOSE, _NETWORK, DRILL_HA_DIR)."""

    def __init__(self, csv_rows: int, clients: int) -> None:
        env = os.environ
        root = Path(env["DRILL_HA_DIR"])
        super().__init__(root, csv_rows, clients, tally_path=f"{CONTAINER_DIR}/tally.log")
        self.url = env["TEST_DOCKER_URL"]
        self.headers = {"Authorization": f"Bearer {env['TEST_DOCKER_KEY']}"}
        self.compose = shlex.split(env["TEST_DOCKER_COMPOSE"])
        self.cluster = ComposeRedis(self.compose, env["TEST_DOCKER_NETWORK"])
        self.replica_wait: bool | None = None
        self.workers = len(run([*self.compose, "ps", "--quiet", "worker"]).split())
        # The model into the stack's volume, through the one-shot `models` container that
        # mounts it read-write (gateway and workers mount it read-only).
        models = self.cluster.container("models")
        run(["docker", "cp", str(self.models / "tally"), f"{models}:/app/models/"])
        self.tally.touch()
        self.tally.chmod(0o666)  # the workers write it as their own user

    @property
    def base_url(self) -> str:
        return self.url

    def start(self, name: str, replica_wait: bool = True) -> None:
        """The stack is already up: (re)create gateway and workers only to change the
        replica wait, then wait until every worker beats and the model is served."""
        del name
        self.redis = self.cluster
        if self.replica_wait is not None and replica_wait != self.replica_wait:
            env = {**os.environ, "MLQUEUE_REPLICA_WAIT": str(replica_wait).lower()}
            argv = [*self.compose, "up", "--detach", "--no-deps", "--force-recreate"]
            argv += ["--scale", f"worker={self.workers}", "gateway", "worker"]
            done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"recreating gateway and workers: {done.stderr[-800:]}")
        self.replica_wait = replica_wait
        wait_until(self._ready, 180, "the gateway ready with every worker and the tally model")

    def _ready(self) -> bool:
        try:
            ready = httpx.get(f"{self.url}/readyz", timeout=5)
            models = httpx.get(f"{self.url}/v1/models", headers=self.headers, timeout=5)
        except httpx.HTTPError:
            return False
        workers = ready.json().get("checks", {}).get("workers") if ready.is_success else None
        return workers == self.workers and models.is_success and "tally" in models.text

    def stop(self) -> None:
        """Nothing: `.ci/docker-stack` takes the stack down."""

    def _kill(self, load: Load, since: float) -> str:
        """As `HaDrill._kill`, but the container starts again at once, as a restart policy
        restarts a crashed one (`docker kill` itself is exempt from restart policies): its
        entrypoint waits for the failover, then joins the new master as a replica."""
        cluster = self.cluster
        victim = cluster.master()
        cluster.kill(victim)
        cluster.start_node(victim, replica_of=None)
        new = cluster.wait_for_new_master(victim)
        failover = time.monotonic() - since
        cluster.wait_in_sync()
        return f"{victim.name}->{new.name}, promoted after {failover:.1f} s"

    def _lag(self, load: Load, since: float) -> str:
        cluster = self.cluster
        victim = cluster.master()
        replica = next(node for node in cluster.nodes if node != victim)
        cluster.cut(replica)
        cut = time.monotonic()
        try:
            time.sleep(2.0)  # below min-replicas-max-lag (5 s): the master still takes writes
            held = len([t for t in load.ok_times if t > cut])
            cluster.kill(victim)
        finally:
            cluster.reconnect(replica)
        new = cluster.wait_for_new_master(victim)
        cluster.start_node(victim, replica_of=new)
        return f"{held} accepted while the replica was off the network"
