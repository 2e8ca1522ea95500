"""Tracing's cost in CPU per job: the same system with tracing off and on, alternated.

    python -m bench.trace_cost --rounds 2 --clients 16 --requests 60 [--ratio 0.1]

Wall-clock throughput on a shared, loaded machine swings with the other work on it; the CPU time
that the gateway and worker processes spend per job swings far less. Each round starts Redis, one
worker (two prefork processes) and the gateway, sends `clients x requests` 1-row jobs (submit +
long-poll result, `bench.loadgen`, every answer checked), and reads the CPU time (user + system)
of the gateway's and the worker's process trees from /proc before and after. "on" exports every
span over OTLP/HTTP to a sink in this process, on 127.0.0.1, that counts and discards them.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from sklearn.datasets import load_diabetes

from bench.drivers import http_ready, loadgen, running
from devrun import processes
from shared.registry import Registry
from worker.sklearn_model import SklearnModel
from worker.train import train_demo

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of `pid` and every live process below it."""
    total = 0
    for each in {pid, *processes.descendants(pid)}:
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / TICK


@contextmanager
def sink() -> Iterator[tuple[int, dict[str, int]]]:
    counts = {"spans": 0}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            request = ExportTraceServiceRequest.FromString(body)
            with lock:
                counts["spans"] += sum(
                    len(s.spans) for r in request.resource_spans for s in r.scope_spans
                )
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], counts
    finally:
        server.shutdown()
        server.server_close()


def one_round(
    env: dict[str, str], cases: Path, args: argparse.Namespace, logs: Path
) -> dict[str, Any]:
    port = processes.free_port()
    env = {**env, "MLQUEUE_PORT": str(port), "MLQUEUE_LOG_LEVEL": "WARNING"}
    url = f"http://127.0.0.1:{port}"
    with (
        running(processes.worker_argv(), env, logs / "worker.log") as worker,
        running(processes.gateway_argv(), env, logs / "gateway.log") as gateway,
    ):
        processes.wait_until(http_ready(f"{url}/readyz"), 60, "mlqueue", gateway)
        loadgen(url, "jobs", cases, args.clients, 600, requests=5)  # warm-up
        time.sleep(1.0)  # let the warm-up's spans go out before counting
        before = cpu_seconds(gateway.pid), cpu_seconds(worker.pid)
        load = loadgen(url, "jobs", cases, args.clients, 600, requests=args.requests)
        after = cpu_seconds(gateway.pid), cpu_seconds(worker.pid)
    jobs = load["jobs"]
    assert load["errors"] == load["mismatches"] == 0, load["first_error"]
    return {
        "jobs": jobs,
        "jobs_per_s": load["jobs_per_s"],
        "gateway_cpu_ms_per_job": round(1000 * (after[0] - before[0]) / jobs, 3),
        "worker_cpu_ms_per_job": round(1000 * (after[1] - before[1]) / jobs, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="CPU per job with tracing off and on")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=60, help="jobs per client per round")
    parser.add_argument(
        "--ratio", type=float, default=None, help="also run 'on' keeping this share of traces"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mlqueue-trace-cost-"))
    info = train_demo(Registry(work / "models", "demo"), "demo")
    model_path = work / "models" / "demo" / info.version / info.artifact
    X, _ = load_diabetes(return_X_y=True)
    expected = SklearnModel.load(model_path, fast=False).estimator.predict(X)
    cases = work / "cases.json"
    cases.write_text(json.dumps([[r.tolist(), float(y)] for r, y in zip(X, expected, strict=True)]))
    redis_port = processes.free_port()
    redis = processes.start_redis(redis_port, work / "redis", log=work / "redis.log")
    base = {
        "MLQUEUE_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "MLQUEUE_MODEL_DIR": str(work / "models"),
    }
    rows: list[dict[str, Any]] = []
    try:
        with sink() as (port, counts):
            on = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{port}/v1/traces"}
            modes: list[tuple[str, dict[str, str]]] = [("off", {}), ("on", on)]
            if args.ratio is not None:
                sampled = {
                    **on,
                    "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                    "OTEL_TRACES_SAMPLER_ARG": str(args.ratio),
                }
                modes.append((f"on, {args.ratio:g} sampled", sampled))
            for i in range(args.rounds):
                for mode, extra in modes:
                    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
                    spans_before = counts["spans"]
                    load_before = os.getloadavg()[0]
                    result = one_round({**env, **base, **extra}, cases, args, work)
                    time.sleep(1.0)
                    result.update(
                        round=i + 1,
                        tracing=mode,
                        load_avg=round(load_before, 2),
                        spans=counts["spans"] - spans_before,
                    )
                    rows.append(result)
                    print(json.dumps(result), flush=True)
    finally:
        processes.stop(redis)
    for mode in dict.fromkeys(r["tracing"] for r in rows):
        mine = [r for r in rows if r["tracing"] == mode]
        gateway = sum(r["gateway_cpu_ms_per_job"] for r in mine) / len(mine)
        worker = sum(r["worker_cpu_ms_per_job"] for r in mine) / len(mine)
        print(f"tracing {mode}: gateway {gateway:.3f} + worker {worker:.3f} CPU ms per job")


if __name__ == "__main__":
    main()
