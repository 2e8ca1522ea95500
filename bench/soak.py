"""`make soak`: many clients for a while; every result checked, memory drift measured.

    python -m bench.soak [--clients 64] [--duration 60] [--warmup 5]

Starts a private system (Redis, one worker, the gateway) with the demo model. Each client
submits a job of 1-10 rows, fetches its result with `?wait=`, and compares it with the demo
model's predictions computed here. Reports jobs/s, errors and mismatches (both must be 0), and the
RSS of the worker (main process plus prefork children) and the gateway after the warm-up and at
the end (drift must stay under 5 %). Exits 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from bench.stack import Stack, tree_rss_kib
from shared.registry import Registry
from worker.sklearn_model import SklearnModel
from worker.train import train_demo

MAX_DRIFT = 0.05
POOL = 512  # distinct row sets, with their expected predictions computed once


@dataclass
class Tally:
    """What the clients saw."""

    jobs: int = 0
    mismatches: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)


async def client(
    http: httpx.AsyncClient,
    pool: list[tuple[list[list[float]], list[float]]],
    until: float,
    tally: Tally,
    seed: int,
) -> None:
    rng = random.Random(seed)
    while time.monotonic() < until:
        rows, expected = pool[rng.randrange(len(pool))]
        started = time.monotonic()
        try:
            submitted = await http.post("/v1/jobs", json={"data": rows})
            if submitted.status_code != 202:
                tally.errors[f"submit {submitted.status_code}"] += 1
                continue
            job_id = submitted.json()["job_id"]
            result = await http.get(f"/v1/jobs/{job_id}/result", params={"wait": 20})
        except httpx.HTTPError as exc:
            tally.errors[type(exc).__name__] += 1
            continue
        if result.status_code != 200:
            tally.errors[f"result {result.status_code}"] += 1
            continue
        tally.jobs += 1
        tally.latencies.append(time.monotonic() - started)
        if result.json()["data"] != expected:
            tally.mismatches += 1


async def load(stack: Stack, pool: list, clients: int, seconds: float, tally: Tally) -> None:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30, limits=limits) as http:
        until = time.monotonic() + seconds
        await asyncio.gather(*(client(http, pool, until, tally, i) for i in range(clients)))


def rss(stack: Stack) -> dict[str, int]:
    assert stack.gateway is not None
    return {
        "worker": tree_rss_kib(stack.workers["w1"].pid),
        "gateway": tree_rss_kib(stack.gateway.pid),  # with its forked server processes
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds, after warm-up")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before RSS at start")
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="mlqueue-soak-"))
    train_demo(Registry(root / "models", "demo"), "demo")
    model = SklearnModel.load(root / "models" / "demo" / "1" / "model.skops")
    rng = np.random.default_rng(0)
    pool = []
    for n in rng.integers(1, 11, POOL):
        rows = rng.normal(0, 0.05, (int(n), 10))
        pool.append((rows.tolist(), [float(v) for v in model.predict(rows)]))

    stack = Stack(root / "run", root / "models", env={"MLQUEUE_LOG_LEVEL": "WARNING"})
    try:
        stack.start(concurrency=None)  # one prefork child per core
        asyncio.run(load(stack, pool, args.clients, args.warmup, Tally()))
        before = rss(stack)
        tally = Tally()
        started = time.monotonic()
        asyncio.run(load(stack, pool, args.clients, args.duration, tally))
        elapsed = time.monotonic() - started
        after = rss(stack)
    finally:
        stack.stop()

    lat = sorted(tally.latencies) or [0.0]
    drift = {k: (after[k] - before[k]) / before[k] for k in before}
    print(f"soak: {args.clients} clients x {args.duration:g} s (after {args.warmup:g} s warm-up)")
    print(f"  jobs            {tally.jobs} ({tally.jobs / elapsed:.1f} jobs/s)")
    print(
        f"  latency         p50 {1000 * lat[len(lat) // 2]:.0f} ms, "
        f"p99 {1000 * lat[int(len(lat) * 0.99)]:.0f} ms (submit + result)"
    )
    print(f"  errors          {sum(tally.errors.values())} {dict(tally.errors) or ''}")
    print(f"  mismatches      {tally.mismatches}")
    for k in before:
        print(
            f"  {k + ' RSS':15} {before[k] / 1024:.1f} MiB -> {after[k] / 1024:.1f} MiB "
            f"({100 * drift[k]:+.1f} %)"
        )
    failed = tally.errors or tally.mismatches or tally.jobs == 0
    failed = failed or any(abs(d) >= MAX_DRIFT for d in drift.values())
    print("soak: FAIL" if failed else "soak: OK")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
