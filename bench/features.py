"""`make bench-features`: what each job-API feature costs, used and unused, on the 1-row path.

One system (Redis, a worker, the gateway) serves every variant of the same load: 64 keep-alive
clients each submitting a 1-row job and long-polling its result, every answer checked against the
model. The variants add one feature each to every submit: an `Idempotency-Key`, `priority`
high, a `callback_url` (a receiver in this process on 127.0.0.1 answers 200; the worker delivers
the signed webhooks), or per-key rate limits on (a second system, generous limits, so only their
cost shows). Rounds alternate plain and variant runs; each variant is reported against the plain
runs, as the ratio of medians. "Unused" costs (the listing index written at
submit, the checks that find no header or field) are inside the plain figures: `make bench-ab
REF=<a commit before the job API>` compares them with the code that had none.

    python -m bench.features [--rounds 3] [--duration 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson

from bench.cases import write_cases
from bench.cpu_budget import tree_cpu
from bench.loadgen import percentile, read_response
from bench.stack import System, system

RESULTS = Path(__file__).parent / "results"
LIMITS = {  # far above what this machine can serve: only the bucket's own cost shows
    "MLQUEUE_RATE_LIMIT_JOBS_PER_SECOND": "100000",
    "MLQUEUE_RATE_LIMIT_JOBS_BURST": "100000",
    "MLQUEUE_RATE_LIMIT_ROWS_PER_SECOND": "1000000",
    "MLQUEUE_RATE_LIMIT_ROWS_BURST": "1000000",
}


class Hook(BaseHTTPRequestHandler):
    """A webhook receiver that answers 200 and counts deliveries."""

    received = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).received += 1
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@contextmanager
def receiver() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


async def client(
    running: System,
    cases: list[tuple[list[float], float]],
    extra: dict[str, Any],
    idempotent: bool,
    deadline: float,
    stats: dict[str, Any],
) -> None:
    port = int(running.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < deadline:
            row, expected = random.choice(cases)
            body = orjson.dumps({"data": [row], **extra})
            key = b"Idempotency-Key: %s\r\n" % uuid.uuid4().hex.encode() if idempotent else b""
            started = time.perf_counter()
            writer.write(
                b"POST /v1/jobs HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                b"%sContent-Length: %d\r\n\r\n%s" % (key, len(body), body)
            )
            status, payload = await read_response(reader)
            if status != 202:
                stats["errors"] += 1
                stats["first_error"] = stats["first_error"] or f"{status} {payload[:200]!r}"
                continue
            job_id = orjson.loads(payload)["job_id"].encode()
            writer.write(b"GET /v1/jobs/%s/result?wait=10 HTTP/1.1\r\nHost: bench\r\n\r\n" % job_id)
            status, payload = await read_response(reader)
            if status != 200 or orjson.loads(payload)["data"][0] != expected:
                stats["errors"] += 1
                stats["first_error"] = stats["first_error"] or f"{status} {payload[:200]!r}"
                continue
            stats["latencies"].append(time.perf_counter() - started)
    finally:
        writer.close()


def run(
    running: System,
    cases: list[tuple[list[float], float]],
    clients: int,
    duration: float,
    extra: dict[str, Any] | None = None,
    idempotent: bool = False,
) -> dict[str, Any]:
    """One closed-loop run; jobs/s, p99, errors and CPU ms per job of the system's processes."""
    stats: dict[str, Any] = {"latencies": [], "errors": 0, "first_error": ""}
    before = sum(tree_cpu(pid) for pid in running.pids.values())

    async def drive() -> float:
        started = time.perf_counter()
        deadline = started + duration
        await asyncio.gather(
            *(
                client(running, cases, extra or {}, idempotent, deadline, stats)
                for _ in range(clients)
            )
        )
        return time.perf_counter() - started

    wall = asyncio.run(drive())
    jobs = len(stats["latencies"])
    cpu = sum(tree_cpu(pid) for pid in running.pids.values()) - before
    return {
        "jobs_per_s": round(jobs / wall, 1),
        "p99_ms": round(1000 * percentile(stats["latencies"], 99), 2),
        "cpu_ms_per_job": round(1000 * cpu / max(jobs, 1), 3),
        "errors": stats["errors"],
        "first_error": stats["first_error"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description="the cost of each job-API feature")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--duration", type=float, default=8.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mlqueue-features-"))
    cases = [(row, y) for row, y in json.loads(write_cases(work).read_text())]
    report: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_avg_before": os.getloadavg(),
        "args": vars(args),
        "runs": {},
    }
    runs: dict[str, list[dict[str, Any]]] = report["runs"]

    def measure(name: str, running: System, **variant: Any) -> None:
        runs.setdefault(name, []).append(
            run(running, cases, args.clients, args.duration, **variant)
        )

    env = {"MLQUEUE_WEBHOOK_SECRET": "bench-secret", "MLQUEUE_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1"}
    # Two systems alike but for the rate limits, up side by side so that the rounds alternate.
    with (
        receiver() as hook_url,
        system(work, env) as plain,
        system(work, {**env, **LIMITS}) as limited,
    ):
        for running in (plain, limited):
            run(running, cases, args.clients, 2)  # warm-up
        for _ in range(args.rounds):
            measure("plain", plain)
            measure("Idempotency-Key", plain, idempotent=True)
            measure("priority high", plain, extra={"priority": "high"})
            measure("plain", plain)
            measure("callback_url", plain, extra={"callback_url": hook_url})
            measure("rate limits on", limited)
        report["webhooks_received"] = Hook.received
    report["load_avg_after"] = os.getloadavg()
    print_table(report)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"features-{report['when'].replace(':', '')}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"written: {out}")
    return 1 if any(r["errors"] for rs in runs.values() for r in rs) else 0


def print_table(report: dict[str, Any]) -> None:
    runs = report["runs"]
    print(
        f"\nEach feature on every 1-row submit, {report['args']['clients']} clients, "
        f"{report['args']['rounds']} rounds of {report['args']['duration']:g} s; load "
        f"{report['load_avg_before'][0]:.2f} before, {report['load_avg_after'][0]:.2f} after"
    )
    print(f"{'variant':22} {'jobs/s':>8} {'p99 ms':>8} {'CPU ms/job':>11} {'vs plain':>9}")

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[name])

    for name in runs:
        rate = median(name, "jobs_per_s")
        ratio = rate / median("plain", "jobs_per_s")
        print(
            f"{name:22} {rate:>8.1f} {median(name, 'p99_ms'):>8.1f} "
            f"{median(name, 'cpu_ms_per_job'):>11.3f} {ratio:>9.3f}"
        )
    print(f"webhooks received: {report.get('webhooks_received', 0)}")


if __name__ == "__main__":
    sys.exit(main())
