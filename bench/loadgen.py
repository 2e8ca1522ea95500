"""A cheap HTTP/1.1 load generator: asyncio streams, keep-alive, one coroutine per client.

    python -m bench.loadgen --url http://127.0.0.1:8000 --mode jobs --clients 64 --duration 15

Modes: `jobs` submits a 1-row job and long-polls its result (`?wait=`); `predict` (alias `sync`)
posts one row to `/predict` (the article's sync app, or mlqueue's façade of the same shape); `v2`
posts one row to the Open Inference Protocol's `/v2/models/demo/infer` (MLServer). Every answer is
checked against the expected prediction for its row. `bench.openloop` sends the same requests at a
fixed arrival rate instead.
Prints one JSON object: jobs/s, latency percentiles, errors, and this process's own CPU seconds
(client, Redis, workers and gateway share the same cores, so the client's cost is reported).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import orjson


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    mismatches: int = 0
    first_error: str = ""


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


class Client:
    def __init__(self, host: str, port: int, mode: str, cases: list[tuple[bytes, float]]) -> None:
        self.host, self.port, self.mode, self.cases = host, port, mode, cases

    async def run(self, deadline: float, stats: Stats, limit: int | None) -> None:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        done = 0
        try:
            while time.perf_counter() < deadline and (limit is None or done < limit):
                body, expected = random.choice(self.cases)
                started = time.perf_counter()
                try:
                    value = await self.one(reader, writer, body)
                except (ValueError, KeyError, asyncio.IncompleteReadError) as exc:
                    stats.errors += 1
                    stats.first_error = stats.first_error or repr(exc)
                    continue
                stats.latencies.append(time.perf_counter() - started)
                if value != expected:
                    stats.mismatches += 1
                done += 1
        finally:
            writer.close()

    async def one(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes
    ) -> float:
        return await one(self.mode, reader, writer, body)


MODES = ("jobs", "predict", "sync", "v2")
V2_PATH = b"/v2/models/demo/infer"


def encode(mode: str, row: list[float]) -> bytes:
    """The request body that asks `mode`'s endpoint for the prediction of one `row`."""
    if mode == "v2":
        tensor = {"name": "input-0", "shape": [1, len(row)], "datatype": "FP64", "data": row}
        return orjson.dumps({"inputs": [tensor]})
    return orjson.dumps({"data": [row]})


async def one(
    mode: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes
) -> float:
    """Send one request (two for `jobs`) on a keep-alive connection; the prediction answered."""
    path = {"jobs": b"/v1/jobs", "v2": V2_PATH}.get(mode, b"/predict")
    writer.write(
        b"POST %s HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (path, len(body), body)
    )
    status, payload = await read_response(reader)
    if mode == "v2":
        if status != 200:
            raise ValueError(f"infer answered {status}: {payload[:200]!r}")
        return float(orjson.loads(payload)["outputs"][0]["data"][0])
    if mode != "jobs":
        if status != 200:
            raise ValueError(f"/predict answered {status}: {payload[:200]!r}")
        return float(orjson.loads(payload)["data"][0])
    if status != 202:
        raise ValueError(f"submit answered {status}: {payload[:200]!r}")
    job_id = orjson.loads(payload)["job_id"]
    writer.write(
        b"GET /v1/jobs/%s/result?wait=10 HTTP/1.1\r\nHost: bench\r\n\r\n" % job_id.encode()
    )
    status, payload = await read_response(reader)
    if status != 200:
        raise ValueError(f"result answered {status}: {payload[:200]!r}")
    return float(orjson.loads(payload)["data"][0])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else float("nan")


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    url = urlsplit(args.url)
    cases = [(encode(args.mode, row), expected) for row, expected in args.loaded_cases]
    client = Client(url.hostname or "127.0.0.1", url.port or 80, args.mode, cases)
    stats = Stats()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    deadline = wall0 + args.duration
    await asyncio.gather(*(client.run(deadline, stats, args.requests) for _ in range(args.clients)))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    ms = [1000 * v for v in stats.latencies]
    return {
        "mode": args.mode,
        "clients": args.clients,
        "seconds": round(wall, 2),
        "jobs": len(ms),
        "jobs_per_s": round(len(ms) / wall, 1),
        "p50_ms": round(percentile(ms, 50), 2),
        "p95_ms": round(percentile(ms, 95), 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "errors": stats.errors,
        "mismatches": stats.mismatches,
        "first_error": stats.first_error,
        "client_cpu_s": round(cpu, 2),
        "client_cpu_share": round(cpu / wall, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", required=True)
    parser.add_argument("--mode", choices=MODES, default="jobs")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--requests", type=int, default=None, help="per client, then stop")
    parser.add_argument("--cases", required=True, help="JSON [[row, expected prediction], ...]")
    args = parser.parse_args()
    with open(args.cases) as fh:
        args.loaded_cases = json.load(fh)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(main_async(args))))


if __name__ == "__main__":
    main()
