"""A private copy of the whole system (Redis, workers, gateway) for drills, soaks and fault tests.

Built on `devrun.processes`, like `make run` and the integration fixture; every process leads its
own process group, so a test can SIGKILL one worker (or one prefork child) and start another.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from redis import Redis

from devrun import processes
from devrun.processes import children
from shared.jobstore import WORKERS
from shared.redis_clients import sync_redis
from shared.settings import Settings


@dataclass
class Stack:
    """Processes of one system on free ports, their logs under `workdir`."""

    workdir: Path
    model_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    redis_args: Sequence[str] = ()
    password: str | None = None
    url: str = ""  # another Redis than the one `start_redis` starts (e.g. `rediss://`)
    sentinels: str = ""  # MLQUEUE_REDIS_SENTINELS: find the master through these
    redis_port: int = field(default_factory=processes.free_port)
    http_port: int = field(default_factory=processes.free_port)
    redis_proc: subprocess.Popen[bytes] | None = None
    gateway: subprocess.Popen[bytes] | None = None
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.env = {
            "MLQUEUE_REDIS_URL": self.redis_url,
            "MLQUEUE_MODEL_DIR": str(self.model_dir),
            "MLQUEUE_PORT": str(self.http_port),
            "MLQUEUE_HEARTBEAT_INTERVAL": "0.5",
            **({"MLQUEUE_REDIS_SENTINELS": self.sentinels} if self.sentinels else {}),
            **self.env,
        }

    @property
    def redis_url(self) -> str:
        if self.url:
            return self.url
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.redis_port}/0"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def log(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def redis(self) -> Redis:
        """A client of the system's Redis (its current master, with sentinels)."""
        settings = Settings(redis_url=self.redis_url, redis_sentinels=self.sentinels)  # type: ignore[arg-type]
        return sync_redis(settings, socket_timeout=5)

    def start_redis(self) -> None:
        extra = list(self.redis_args) + (["--requirepass", self.password] if self.password else [])
        self.redis_proc = processes.start_redis(
            self.redis_port, self.workdir / "redis", log=self.log("redis"), extra=extra
        )

    def stop_redis(self) -> None:
        if self.redis_proc is not None:
            processes.stop(self.redis_proc)
            self.redis_proc = None

    def start_worker(
        self, name: str = "w1", concurrency: int | None = 2, wait: bool = True
    ) -> float:
        """Start a worker; returns the time (monotonic) it was started."""
        argv = [*processes.worker_argv(concurrency), "-n", f"{name}@%h"]
        started = time.monotonic()
        proc = processes.spawn(argv, self.env, log=self.log(f"worker-{name}"))
        self.workers[name] = proc
        if wait:
            node = f"{name}@{os.uname().nodename}"
            processes.wait_until(
                lambda: self.redis().zscore(WORKERS, node) is not None, 60, f"worker {node}", proc
            )
        return started

    def kill_worker(self, name: str = "w1") -> None:
        """SIGKILL a worker's whole process group: main process and prefork children."""
        proc = self.workers.pop(name)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def start_gateway(self) -> None:
        self.gateway = processes.spawn(processes.gateway_argv(), self.env, log=self.log("gateway"))
        processes.wait_until(self._gateway_up, 60, "gateway", self.gateway)

    def _gateway_up(self) -> bool:
        try:
            return httpx.get(f"{self.base_url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def start(self, workers: int = 1, concurrency: int | None = 2) -> Stack:
        self.start_redis()
        for i in range(workers):
            self.start_worker(f"w{i + 1}", concurrency)
        self.start_gateway()
        return self

    def stop(self) -> None:
        for proc in [self.gateway, *self.workers.values(), self.redis_proc]:
            if proc is not None:
                processes.stop(proc)
        self.workers.clear()
        self.gateway = self.redis_proc = None

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.workdir.glob("*.log"))


def rss_kib(pid: int) -> int:
    """VmRSS of one process in KiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_kib(pid: int) -> int:
    """VmRSS of a process plus its direct children (a worker and its prefork pool)."""
    return rss_kib(pid) + sum(rss_kib(c) for c in children(pid))


@dataclass(frozen=True)
class System:
    """A running system as a benchmark sees it: where to send requests, which pids to watch."""

    url: str
    pids: dict[str, int]  # "gateway", "worker", "redis" -> the pid leading each process tree


@contextlib.contextmanager
def system(
    work: Path, env: dict[str, str] | None = None, source: Path | None = None
) -> Iterator[System]:
    """Redis, one worker and the gateway (settings' defaults, `env` over them) on free ports,
    with the models of `work / "models"`, ready for requests; stopped on exit. `source` runs
    another checkout of mlqueue (e.g. an older commit, for an A/B) with this interpreter."""
    redis_port, port = processes.free_port(), processes.free_port()
    env = {
        "MLQUEUE_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "MLQUEUE_MODEL_DIR": str(work / "models"),
        "MLQUEUE_PORT": str(port),
        "MLQUEUE_LOG_LEVEL": "WARNING",
        **({"PYTHONPATH": str(source)} if source else {}),
        **(env or {}),
    }
    url = f"http://127.0.0.1:{port}"
    redis = processes.start_redis(redis_port, work / f"redis-{port}", log=work / "redis.log")
    procs: list[subprocess.Popen[bytes]] = [redis]
    try:
        # `python -m` puts its working directory first on sys.path, before PYTHONPATH: another
        # checkout runs from its own directory, or this one's packages would shadow its own.
        worker = processes.spawn(processes.worker_argv(), env, work / "worker.log", source)
        procs.append(worker)
        gateway = processes.spawn(processes.gateway_argv(), env, work / "gateway.log", source)
        procs.append(gateway)
        processes.wait_until(lambda: _ready(f"{url}/readyz"), 60, "mlqueue", gateway)
        yield System(url, {"gateway": gateway.pid, "worker": worker.pid, "redis": redis.pid})
    finally:
        for proc in reversed(procs):
            processes.stop(proc)


def _ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
