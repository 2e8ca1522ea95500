"""The real system for integration tests: redis-server, a Celery worker and uvicorn, as processes.

Each is started once per session on free ports and stopped at the end; waits are bounded.
`MLQUEUE_TEST_REDIS_URL=redis://host:port/db` makes them use that (throwaway) Redis instead of
starting one: CI's Redis service container, the test compose's `redis`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from celery import Celery
from redis import Redis

from devrun import processes
from shared.jobstore import WORKERS
from shared.tasks import WORKER_QUEUES as QUEUES


@dataclass
class System:
    """Handles on the running system."""

    redis_url: str
    base_url: str
    env: dict[str, str]
    worker_log: Path
    workdir: Path
    worker_metrics_url: str
    worker: subprocess.Popen[bytes] | None = None

    def redis(self) -> Redis:
        return Redis.from_url(self.redis_url)

    def start_worker(self, concurrency: int = 2, name: str = "w1") -> subprocess.Popen[bytes]:
        argv = [*processes.worker_argv(concurrency), "-n", f"{name}@%h"]
        self.worker = processes.spawn(argv, self.env, log=self.worker_log)
        node = f"{name}@{os.uname().nodename}"
        processes.wait_until(
            lambda: self.redis().zscore(WORKERS, node) is not None,
            60,
            f"worker {node}",
            self.worker,
        )
        return self.worker


@contextlib.contextmanager
def running_system(
    workdir: Path,
    model_dir: Path,
    db_offset: int = 0,
    environ: Mapping[str, str] | None = None,
    **settings: str,
) -> Iterator[System]:
    """Redis, a worker and the gateway on free ports, with `MLQUEUE_*` overrides; stopped after.
    `db_offset` keeps a second system on a given Redis apart from the first; `environ` adds other
    variables (`OTEL_*`)."""
    http_port, metrics_port = processes.free_port(), processes.free_port()
    redis, redis_url = _redis(workdir, db_offset)
    env = {
        "MLQUEUE_REDIS_URL": redis_url,
        "MLQUEUE_MODEL_DIR": str(model_dir),
        "MLQUEUE_PORT": str(http_port),
        "MLQUEUE_HEARTBEAT_INTERVAL": "0.5",
        "MLQUEUE_UNACKED_RESTORE_INTERVAL": "1",
        "MLQUEUE_VISIBILITY_TIMEOUT": "8",
        "MLQUEUE_TASK_SOFT_TIME_LIMIT": "5",
        "MLQUEUE_TASK_TIME_LIMIT": "7",
        "MLQUEUE_WORKER_METRICS_PORT": str(metrics_port),
        "MLQUEUE_METRICS_DIR": str(workdir / "metrics"),
        **{f"MLQUEUE_{k.upper()}": v for k, v in settings.items()},
        **(environ or {}),
    }
    system = System(
        redis_url,
        f"http://127.0.0.1:{http_port}",
        env,
        workdir / "worker.log",
        workdir,
        f"http://127.0.0.1:{metrics_port}/metrics",
    )
    gateway = processes.spawn(processes.gateway_argv(), env, log=workdir / "gateway.log")
    try:
        system.start_worker()
        processes.wait_until(lambda: _ready(system.base_url), 60, "gateway /readyz", gateway)
        yield system
    finally:
        for proc in (gateway, system.worker, redis):
            if proc is not None:
                processes.stop(proc)


@pytest.fixture(scope="session")
def system(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[System]:
    with running_system(tmp_path_factory.mktemp("system"), model_dir) as system:
        yield system


@pytest.fixture(scope="module")
def csv_system(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[System]:
    """A second system whose CSV chunks are 100 lines and uploads at most 4 MiB, so that small
    files make many chunks and the size limit is cheap to pass."""
    with running_system(
        tmp_path_factory.mktemp("csv-system"),
        model_dir,
        db_offset=1,
        csv_chunk_rows="100",
        max_upload_bytes=str(4 * 1024 * 1024),
    ) as system:
        yield system


# Two API keys for the keyed system: each sees only its own jobs.
API_KEYS = ("mlq_test_alice_0123456789", "mlq_test_bob_0123456789")


@pytest.fixture(scope="session")
def keyed_system(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[System]:
    """A system whose gateway requires API keys (`API_KEYS`): the SDK, the CLI and the page's
    key field are tested against it."""
    digests = ",".join(hashlib.sha256(k.encode()).hexdigest() for k in API_KEYS)
    with running_system(
        tmp_path_factory.mktemp("keyed-system"), model_dir, db_offset=2, api_keys=digests
    ) as system:
        yield system


def _redis(workdir: Path, db_offset: int = 0) -> tuple[subprocess.Popen[bytes] | None, str]:
    """A redis-server started for the system, or none when MLQUEUE_TEST_REDIS_URL names one
    (then database `db + db_offset` of it)."""
    given = os.environ.get("MLQUEUE_TEST_REDIS_URL")
    if given:
        url = urlsplit(given)
        db = (int(url.path.strip("/") or 0) + db_offset) % 16
        given = urlunsplit(url._replace(path=f"/{db}"))
        with Redis.from_url(given, socket_timeout=5) as client:
            client.ping()  # fail fast, and clearly, on a wrong URL
        return None, given
    port = processes.free_port()
    proc = processes.start_redis(port, workdir / "redis", log=workdir / "redis.log")
    return proc, f"redis://127.0.0.1:{port}/0"


def _ready(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def http(system: System) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=system.base_url, timeout=30) as client:
        yield client


def wait_for(predicate: object, timeout: float = 20.0) -> None:
    """Poll `predicate()` until true, failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


@contextmanager
def consumer_paused(system: System) -> Iterator[None]:
    """No worker takes messages from the queues inside the block (they wait in Redis)."""
    control = Celery(broker=system.redis_url).control
    # Wait for as many replies as workers beat, not for the whole timeout on every queue.
    replies = {"reply": True, "timeout": 5, "limit": max(1, system.redis().zcard(WORKERS))}
    for queue in QUEUES:
        control.cancel_consumer(queue, **replies)
    # A BRPOP sent before the cancel may still pop what the block sends: wait it out (kombu's
    # BRPOP times out after 1 s, and the next one leaves the cancelled queues out).
    time.sleep(1.2)
    try:
        yield
    finally:
        for queue in QUEUES:
            control.add_consumer(queue, **replies)


def answers(url: str) -> bool:
    """Whether `url` answers 200 (for `processes.wait_until`)."""
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def gateway_processes(system: System, n: int) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A gateway of `n` processes on the system's Redis and port of its own: (URL, parent)."""
    port = processes.free_port()
    env = {**system.env, "MLQUEUE_PORT": str(port), "MLQUEUE_GATEWAY_WORKERS": str(n)}
    log = system.workdir / f"gateway-x{n}-{port}.log"
    gateway = processes.spawn(processes.gateway_argv(), env, log=log)
    url = f"http://127.0.0.1:{port}"
    try:
        processes.wait_until(lambda: answers(f"{url}/healthz"), 30, f"gateway x{n}", gateway)
        yield url, gateway
    finally:
        processes.stop(gateway)
