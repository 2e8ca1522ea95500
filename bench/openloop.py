"""Open-loop load: one-row requests sent at a constant arrival rate, whatever is outstanding.

    python -m bench.openloop --url http://127.0.0.1:8000 --mode jobs --rate 600 --duration 10 \
        --cases cases.json

A closed-loop client (`bench.loadgen`) waits for each answer before its next request, so a slow
server also slows the arrivals and its worst moments are sampled less ("coordinated omission").
Here request i is due at t0 + i / rate: the sender launches it on schedule as its own task, and
its latency runs from that scheduled time, not from when a connection became free. Requests take
an idle keep-alive connection from a pool (pre-opened, growing up to --max-connections); waiting
for one counts in the latency too. After the last send, stragglers get --drain seconds, then are
counted as unfinished: every run stops by itself. Modes and answer checks are `bench.loadgen`'s.
Prints one JSON object: target and achieved rate, p50/p99/p99.9 latency, errors, sender lag.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from bench.loadgen import MODES, encode, one, percentile

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]
MAX_CONNECTIONS = 512  # requests in flight at once, all on one API key (bench.bench sets its cap)


@dataclass
class Run:
    """What one open-loop run saw."""

    latencies: list[float] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)  # actual launch - scheduled time
    errors: int = 0
    mismatches: int = 0
    first_error: str = ""
    last_done: float = 0.0


class Pool:
    """Idle keep-alive connections to one server; a request never shares one with another."""

    def __init__(self, host: str, port: int, limit: int) -> None:
        self.host, self.port = host, port
        self.idle: list[Connection] = []
        self.slots = asyncio.Semaphore(limit)
        self.in_use = self.peak = 0

    async def fill(self, count: int) -> None:
        for _ in range(count):
            self.idle.append(await asyncio.open_connection(self.host, self.port))

    async def take(self) -> Connection:
        await self.slots.acquire()
        # Servers close keep-alive connections idle too long (uvicorn: after 5 s); one that has
        # been closed is dropped here rather than failing a request that the server never saw.
        while self.idle and (self.idle[-1][0].at_eof() or self.idle[-1][1].is_closing()):
            self.idle.pop()[1].close()
        if self.idle:
            connection = self.idle.pop()
        else:
            try:
                connection = await asyncio.open_connection(self.host, self.port)
            except OSError:
                self.slots.release()
                raise
        self.in_use += 1
        self.peak = max(self.peak, self.in_use)
        return connection

    def give(self, connection: Connection, healthy: bool) -> None:
        if healthy:
            self.idle.append(connection)
        else:
            connection[1].close()
        self.in_use -= 1
        self.slots.release()

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


async def request(
    pool: Pool, mode: str, case: tuple[bytes, float], scheduled: float, run: Run
) -> None:
    run.lags.append(time.perf_counter() - scheduled)
    body, expected = case
    try:
        connection = await pool.take()
    except OSError as exc:
        run.errors += 1
        run.first_error = run.first_error or repr(exc)
        return
    healthy = False
    try:
        value = await one(mode, *connection, body)
        healthy = True
    except (ValueError, KeyError, OSError, asyncio.IncompleteReadError) as exc:
        run.errors += 1
        run.first_error = run.first_error or repr(exc)
        return
    finally:
        pool.give(connection, healthy)
    now = time.perf_counter()
    run.latencies.append(now - scheduled)
    run.last_done = max(run.last_done, now)
    if value != expected:
        run.mismatches += 1


async def open_loop(
    url: str,
    mode: str,
    cases: list[tuple[bytes, float]],
    rate: float,
    duration: float,
    warm_connections: int,
    max_connections: int,
    drain: float,
) -> dict[str, object]:
    """Send `rate` x `duration` requests on schedule, wait up to `drain` s for the last ones."""
    parts = urlsplit(url)
    pool = Pool(parts.hostname or "127.0.0.1", parts.port or 80, max_connections)
    await pool.fill(min(warm_connections, max_connections))
    run, tasks = Run(), []
    total = max(1, round(rate * duration))
    cpu0 = time.process_time()
    t0 = time.perf_counter() + 0.05
    sent = 0
    while sent < total:
        now = time.perf_counter()
        # Launch everything that is due (timers have ~1 ms resolution, arrivals may be closer).
        while sent < total and t0 + sent / rate <= now:
            case = random.choice(cases)
            tasks.append(asyncio.create_task(request(pool, mode, case, t0 + sent / rate, run)))
            sent += 1
        if sent < total:
            await asyncio.sleep(max(0.0, t0 + sent / rate - time.perf_counter()))
    send_s = time.perf_counter() - t0
    _, pending = await asyncio.wait(tasks, timeout=drain)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    cpu = time.process_time() - cpu0
    pool.close()
    ms = [1000 * v for v in run.latencies]
    lags = [1000 * v for v in run.lags]
    # Answers per second over the schedule, or longer when the last answers came later.
    span = max(run.last_done - t0, total / rate)
    return {
        "mode": mode,
        "target_rate": round(rate, 1),
        "duration_s": duration,
        "sent": total,
        "send_s": round(send_s, 2),
        "completed": len(ms),
        "achieved_rate": round(len(ms) / span, 1) if ms else 0.0,
        "p50_ms": round(percentile(ms, 50), 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "p999_ms": round(percentile(ms, 99.9), 2),
        "max_ms": round(max(ms), 2) if ms else float("nan"),
        "errors": run.errors,
        "mismatches": run.mismatches,
        "unfinished": len(pending),
        "first_error": run.first_error,
        "send_lag_p99_ms": round(percentile(lags, 99), 2),
        "connections_peak": pool.peak,
        "client_cpu_share": round(cpu / (time.perf_counter() - t0), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", required=True)
    parser.add_argument("--mode", choices=MODES, default="jobs")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of arrivals")
    parser.add_argument("--warm-connections", type=int, default=64)
    parser.add_argument("--max-connections", type=int, default=MAX_CONNECTIONS)
    parser.add_argument("--drain", type=float, default=15.0, help="seconds for the last answers")
    parser.add_argument("--cases", required=True, help="JSON [[row, expected prediction], ...]")
    args = parser.parse_args()
    if args.rate <= 0 or args.duration <= 0:
        parser.error("--rate and --duration must be positive")
    with open(args.cases) as fh:
        cases = [(encode(args.mode, row), expected) for row, expected in json.load(fh)]
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(
        open_loop(
            args.url,
            args.mode,
            cases,
            args.rate,
            args.duration,
            args.warm_connections,
            args.max_connections,
            args.drain,
        )
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
