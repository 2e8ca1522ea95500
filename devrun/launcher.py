"""`make run`: Redis (unless MLQUEUE_REDIS_URL is set), the demo model, a worker and the gateway.

Stays in the foreground; Ctrl-C (or SIGTERM) stops every process it started, children included.
A worker or gateway that dies (killed, crashed) is started again, as a supervisor would; if one
keeps dying, or Redis dies, everything stops with a non-zero exit.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import FrameType

from devrun import processes
from shared.settings import get_settings

RUN_DIR = Path(".run")
MAX_RESTARTS = 5  # per process, within RESTART_WINDOW seconds
RESTART_WINDOW = 60.0


class Stop(Exception):
    """Raised by the signal handler to unwind into the shutdown path."""


def _on_signal(signum: int, _: FrameType | None) -> None:
    raise Stop(signal.Signals(signum).name)


def ready(url: str) -> bool:
    """Whether `url` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our own loopback URL
            return bool(response.status == 200)
    except OSError:
        return False


def main() -> int:
    """Start everything, wait for Ctrl-C or a dead child, stop everything."""
    settings = get_settings()
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    RUN_DIR.mkdir(exist_ok=True)
    env: dict[str, str] = {}
    started: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        if "redis_url" not in settings.model_fields_set:
            port = settings.local_redis_port
            port = port if processes.port_is_free(port) else processes.free_port()
            started.append(
                ("redis", processes.start_redis(port, RUN_DIR / "redis", log=RUN_DIR / "redis.log"))
            )
            env["MLQUEUE_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
            print(f"mlqueue: started redis-server on 127.0.0.1:{port}", flush=True)
        subprocess.run([sys.executable, "-m", "worker.train", "--if-missing"], check=True)
        commands = {
            "worker": processes.worker_argv(settings.worker_concurrency),
            "gateway": processes.gateway_argv(),
        }
        for name, argv in commands.items():
            started.append((name, processes.spawn(argv, env)))
        base = f"http://{settings.host}:{settings.port}"
        processes.wait_until(lambda: ready(f"{base}/readyz"), 90, "mlqueue /readyz", started[-1][1])
        print(f"mlqueue: ready at {base} (docs: {base}/docs); Ctrl-C stops everything", flush=True)
        restarts: dict[str, list[float]] = {name: [] for name in commands}
        while True:
            for i, (name, proc) in enumerate(started):
                if proc.poll() is None:
                    continue
                print(f"mlqueue: {name} exited with code {proc.returncode}", file=sys.stderr)
                recent = [
                    t for t in restarts.get(name, []) if time.monotonic() - t < RESTART_WINDOW
                ]
                if name not in commands or len(recent) >= MAX_RESTARTS:
                    return 1
                processes.stop(proc)  # reap what the dead process left in its group
                restarts[name] = [*recent, time.monotonic()]
                print(f"mlqueue: restarting {name}", file=sys.stderr, flush=True)
                started[i] = (name, processes.spawn(commands[name], env))
            time.sleep(0.5)
    except Stop as stop:
        print(f"mlqueue: {stop}: stopping", flush=True)
        return 0
    except (RuntimeError, TimeoutError, subprocess.CalledProcessError) as exc:
        print(f"mlqueue: {exc}", file=sys.stderr)
        return 1
    finally:
        # A second Ctrl-C must not skip the cleanup.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for _, proc in reversed(started):
            processes.stop(proc)
        print("mlqueue: stopped", flush=True)


if __name__ == "__main__":
    sys.exit(main())
