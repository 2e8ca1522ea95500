"""Run the gateway with uvicorn, configured from settings: `python -m gateway`.

With `MLQUEUE_GATEWAY_WORKERS` > 1 the processes share one listening socket and keep their
connection counts level (`gateway.balance`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
from types import FrameType

import uvicorn
from pydantic import ValidationError

from gateway.balance import BalancedServer, Seats, shared_listener
from gateway.http_protocol import HttpProtocol
from shared import metrics_dir
from shared.logs import configure_logging
from shared.settings import Settings, get_settings


def config(settings: Settings) -> uvicorn.Config:
    """The uvicorn configuration of one gateway process."""
    return uvicorn.Config(
        "gateway.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        log_config=None,  # keep our JSON handler (main() and each lifespan configure it)
        # httptools refuses a request with both Content-Length and Transfer-Encoding (h11 takes
        # it); pinned so the choice never depends on what happens to be installed. Its protocol
        # sends each response in one system call (gateway.http_protocol).
        http=HttpProtocol,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=10,
        limit_concurrency=4096,
    )


def serve_many(settings: Settings) -> int:
    """Fork one uvicorn server per worker and wait; a signal is passed on to all of them."""
    # Before the fork: every process then counts into files that any of them sums on /metrics.
    metrics = metrics_dir.enable(None, prefix="mlqueue-gateway-metrics-")
    try:
        return _fork_servers(settings)
    finally:
        shutil.rmtree(metrics, ignore_errors=True)


def _fork_servers(settings: Settings) -> int:
    children: list[int] = []
    server_config = config(settings)
    try:
        listener = shared_listener(settings.host, settings.port, server_config.backlog)
    except OSError as exc:  # the port is taken, say: one clear line
        print(f"mlqueue gateway: cannot listen on {settings.host}:{settings.port}: {exc}")
        return 1
    seats = Seats(settings.gateway_workers)
    for index in range(settings.gateway_workers):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            seats.take(index)
            BalancedServer(server_config, listener, seats).run()
            os._exit(0)
        children.append(pid)

    def forward(signum: int, _: FrameType | None) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    for child in children:
        _, code = os.waitpid(child, 0)
        if code:
            status = 1
            forward(signal.SIGTERM, None)  # one died: stop the rest, let the supervisor restart
    return status


def main() -> None:
    """Serve until interrupted."""
    try:
        settings = get_settings()
    except ValidationError as exc:  # a clear line, not a traceback, for a misconfiguration
        sys.exit(f"mlqueue gateway: invalid settings: {exc}")
    configure_logging(settings.log_level)  # uvicorn's startup lines too, before the lifespan
    if settings.gateway_workers == 1:
        uvicorn.Server(config(settings)).run()
    else:
        sys.exit(serve_many(settings))


if __name__ == "__main__":
    main()
