"""How the benchmarks start servers and drive them: each client run is a process of its own.

`loadgen` runs `bench.loadgen` (closed loop: N keep-alive clients, each sending its next request
when the last one returned) and `arrivals` runs `bench.openloop` (constant arrival rate); both
print one JSON object, which is returned. Every run is bounded in time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from devrun import processes

OPEN_LOOP_SHARES = (0.25, 0.5, 0.75, 0.9)


@contextmanager
def running(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`argv` in its own process group while the block runs; the whole group stopped after."""
    proc = processes.spawn(argv, env, log=log)
    try:
        yield proc
    finally:
        processes.stop(proc)


def http_ready(url: str) -> Callable[[], bool]:
    """A check for `processes.wait_until`: does `url` answer 200?"""

    def check() -> bool:
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    return check


def loadgen(
    url: str, mode: str, cases: Path, clients: int, duration: float, requests: int | None = None
) -> dict[str, Any]:
    argv = [
        sys.executable,
        "-m",
        "bench.loadgen",
        "--url",
        url,
        "--mode",
        mode,
        "--cases",
        str(cases),
        "--clients",
        str(clients),
        "--duration",
        str(duration),
    ]
    if requests:
        argv += ["--requests", str(requests)]
    # Bounded even if a server stops answering mid-request (the client waits on its socket).
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=duration + 120)
    return dict(json.loads(out.stdout))


def arrivals(url: str, mode: str, cases: Path, rate: float, duration: float) -> dict[str, Any]:
    """One `bench.openloop` run (a process of its own, like the closed-loop client)."""
    argv = [
        sys.executable,
        "-m",
        "bench.openloop",
        "--url",
        url,
        "--mode",
        mode,
        "--cases",
        str(cases),
        "--rate",
        f"{rate:.1f}",
        "--duration",
        str(duration),
    ]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=duration + 120)
    return dict(json.loads(out.stdout))


def drive(
    url: str, mode: str, cases: Path, args: argparse.Namespace, open_loop: bool = True
) -> dict[str, Any]:
    """Warm-up, closed-loop load, then `finish`."""
    loadgen(url, mode, cases, args.clients, 2)
    load = loadgen(url, mode, cases, args.clients, args.duration)
    return finish(url, mode, cases, args, load, open_loop)


def finish(
    url: str,
    mode: str,
    cases: Path,
    args: argparse.Namespace,
    load: dict[str, Any],
    open_loop: bool = True,
) -> dict[str, Any]:
    """Sequential latency and, with --open-loop, the open-loop levels at shares of `load`'s rate."""
    seq = loadgen(url, mode, cases, 1, 60, requests=args.sequential)
    found: dict[str, Any] = {"load": load, "sequential": seq}
    if open_loop and args.open_loop and load["jobs_per_s"] > 0:
        found["open_loop"] = [
            {"share": share, **arrivals(url, mode, cases, share * load["jobs_per_s"], args.ol_s)}
            for share in OPEN_LOOP_SHARES
        ]
    return found
