"""`make bench`: mlqueue against its baselines, measured in one run on this machine.

Starts what it needs (redis-server, workers, servers), runs, stops everything, prints one table
and writes the figures as JSON to bench/results/. Throughput is 1-row jobs end to end:
  1. mlqueue: submit + long-poll result over HTTP, 64 concurrent clients, and sequential latency;
  2. the article's synchronous FastAPI `/predict` (1 row per request), same load generator;
  3. naive Celery: one task per 1-row job, JSON rows, plain `model.predict`;
  4. the in-process `model.predict` limit.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from redis import Redis
from sklearn.datasets import load_diabetes

from devrun import processes
from shared.registry import Registry
from worker.sklearn_model import SklearnModel
from worker.train import train_demo

RESULTS = Path(__file__).parent / "results"


@contextmanager
def running(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = processes.spawn(argv, env, log=log)
    try:
        yield proc
    finally:
        processes.stop(proc)


def http_ready(url: str) -> Callable[[], bool]:
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
    out = subprocess.run(argv, capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout))


def bench_mlqueue(
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
        assert worker.poll() is None
        loadgen(url, "jobs", cases, args.clients, 2)  # warm-up
        load = loadgen(url, "jobs", cases, args.clients, args.duration)
        # The synchronous façades over the same queue: the article's /predict and KServe V2.
        predict = loadgen(url, "sync", cases, args.clients, args.duration)
        v2 = loadgen(url, "v2", cases, args.clients, args.duration)
        seq = loadgen(url, "jobs", cases, 1, 60, requests=args.sequential)
    return {"load": load, "predict": predict, "v2": v2, "sequential": seq}


def bench_sync(
    model_path: Path, cases: Path, args: argparse.Namespace, logs: Path
) -> dict[str, Any]:
    port = processes.free_port()
    env = {"MLQUEUE_BENCH_MODEL": str(model_path)}
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "bench.sync_app:app",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    url = f"http://127.0.0.1:{port}"
    with running(argv, env, logs / "sync.log") as server:
        processes.wait_until(http_ready(f"{url}/docs"), 60, "sync app", server)
        loadgen(url, "sync", cases, args.clients, 2)
        load = loadgen(url, "sync", cases, args.clients, args.duration)
        seq = loadgen(url, "sync", cases, 1, 60, requests=args.sequential)
    return {"load": load, "sequential": seq}


def bench_naive_celery(
    redis_url: str, model_path: Path, rows: list[list[float]], args: argparse.Namespace, logs: Path
) -> dict[str, Any]:
    from celery import Celery

    env = {"MLQUEUE_BENCH_MODEL": str(model_path), "MLQUEUE_BENCH_REDIS": redis_url}
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "bench.naive_app",
        "worker",
        "-Q",
        "naive",
        "-c",
        str(os.cpu_count() or 1),
        "--without-gossip",
        "--without-mingle",
        "--loglevel",
        "WARNING",
    ]
    client = Celery(broker=redis_url, backend=redis_url)
    client.conf.update(task_serializer="json", accept_content=["json"])
    with running(argv, env, logs / "naive.log"):
        # Ready once a task round-trips.
        client.send_task("bench.naive_predict", args=[rows[:1]], queue="naive").get(timeout=60)
        cpu0, started = time.process_time(), time.perf_counter()
        sent = [
            client.send_task("bench.naive_predict", args=[[rows[i % len(rows)]]], queue="naive")
            for i in range(args.naive_jobs)
        ]
        submit_s = time.perf_counter() - started
        for result in sent:
            result.get(timeout=120)
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu0
        latencies = []
        for i in range(args.sequential):
            t = time.perf_counter()
            client.send_task(
                "bench.naive_predict", args=[[rows[i % len(rows)]]], queue="naive"
            ).get(timeout=30)
            latencies.append(1000 * (time.perf_counter() - t))
    client.close()
    latencies.sort()
    return {
        "jobs": args.naive_jobs,
        "jobs_per_s": round(args.naive_jobs / wall, 1),
        "submit_s": round(submit_s, 2),
        "client_cpu_s": round(cpu, 2),
        "seq_p50_ms": round(latencies[len(latencies) // 2], 2),
        "seq_p99_ms": round(latencies[int(0.99 * len(latencies))], 2),
    }


def bench_in_process(model_path: Path, X: np.ndarray) -> dict[str, float]:
    fast, plain = SklearnModel.load(model_path), SklearnModel.load(model_path, fast=False)

    def rate(fn: Callable[[], object], rows: int) -> float:
        calls, started = 0, time.perf_counter()
        while time.perf_counter() - started < 1.5:
            fn()
            calls += 1
        return round(calls * rows / (time.perf_counter() - started), 1)

    big = np.tile(X, (23, 1))[:10_000]
    return {
        "predict_1row_calls_per_s": rate(lambda: plain.predict(X[:1]), 1),
        "fast_predict_1row_calls_per_s": rate(lambda: fast.predict(X[:1]), 1),
        "predict_10k_rows_per_s": rate(lambda: plain.predict(big), len(big)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description="mlqueue throughput benchmark")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--sequential", type=int, default=300)
    parser.add_argument("--naive-jobs", type=int, default=3000)
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="mlqueue-bench-"))
    info = train_demo(Registry(work / "models", "demo"), "demo")
    model_path = work / "models" / "demo" / info.version / info.artifact
    X, _ = load_diabetes(return_X_y=True)
    expected = SklearnModel.load(model_path, fast=False).estimator.predict(X)
    cases = work / "cases.json"
    cases.write_text(
        json.dumps([[row.tolist(), float(y)] for row, y in zip(X, expected, strict=True)])
    )
    redis_port = processes.free_port()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    env = {"MLQUEUE_REDIS_URL": redis_url, "MLQUEUE_MODEL_DIR": str(work / "models")}
    report: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpus": os.cpu_count(),
        "load_avg_before": os.getloadavg(),
        "args": vars(args),
    }
    redis = processes.start_redis(redis_port, work / "redis", log=work / "redis.log")
    try:
        report["mlqueue"] = bench_mlqueue(env, cases, args, work)
        Redis.from_url(redis_url).flushall()
        report["sync_fastapi"] = bench_sync(model_path, cases, args, work)
        report["naive_celery"] = bench_naive_celery(redis_url, model_path, X.tolist(), args, work)
        report["in_process"] = bench_in_process(model_path, X)
    finally:
        processes.stop(redis)
    report["load_avg_after"] = os.getloadavg()
    print_table(report)
    out = RESULTS / f"bench-{report['when'].replace(':', '')}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"\nwritten: {out}")
    failures = sum(
        report["mlqueue"][run]["errors"] + report["mlqueue"][run]["mismatches"]
        for run in ("load", "predict", "v2")
    )
    return 1 if failures else 0


def print_table(r: dict[str, Any]) -> None:
    m, s, n, p = r["mlqueue"], r["sync_fastapi"], r["naive_celery"], r["in_process"]
    rows = [
        (
            "mlqueue, HTTP submit+result",
            m["load"]["jobs_per_s"],
            m["load"]["p50_ms"],
            m["load"]["p99_ms"],
            m["sequential"]["p50_ms"],
            m["sequential"]["p99_ms"],
            m["load"]["errors"] + m["load"]["mismatches"],
        ),
        *(
            (
                f"mlqueue, {label}",
                m[run]["jobs_per_s"],
                m[run]["p50_ms"],
                m[run]["p99_ms"],
                None,
                None,
                m[run]["errors"] + m[run]["mismatches"],
            )
            for run, label in (("predict", "/predict (sync)"), ("v2", "V2 infer (sync)"))
        ),
        (
            "article sync FastAPI /predict",
            s["load"]["jobs_per_s"],
            s["load"]["p50_ms"],
            s["load"]["p99_ms"],
            s["sequential"]["p50_ms"],
            s["sequential"]["p99_ms"],
            s["load"]["errors"] + s["load"]["mismatches"],
        ),
        (
            "naive Celery, 1 task per job",
            n["jobs_per_s"],
            None,
            None,
            n["seq_p50_ms"],
            n["seq_p99_ms"],
            0,
        ),
        ("in-process predict, 1 row", p["predict_1row_calls_per_s"], None, None, None, None, 0),
    ]
    print(
        f"\n1-row jobs, {r['args']['clients']} clients x {r['args']['duration']:g} s, "
        f"{r['cpus']} CPUs (load before {r['load_avg_before'][0]:.2f})"
    )
    print(
        f"{'':32} {'jobs/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'seq p50':>8} {'seq p99':>8} "
        f"{'errors':>6}"
    )
    for name, *cells in rows:
        print(
            f"{name:32} "
            + " ".join(
                f"{c:>{w}}" if c is not None else f"{'-':>{w}}"
                for c, w in zip(cells, (9, 8, 8, 8, 8, 6), strict=True)
            )
        )
    print(
        f"\nin-process: fast 1-row predict {p['fast_predict_1row_calls_per_s']} calls/s; "
        f"10k-row batches {p['predict_10k_rows_per_s']:,.0f} rows/s"
    )
    print(f"load generator CPU: {m['load']['client_cpu_share']:.2f} cores during the mlqueue run")
    ours = m["load"]["jobs_per_s"]
    ratio = r["ratios"] = {
        "vs_sync_fastapi": round(ours / s["load"]["jobs_per_s"], 2),
        "vs_naive_celery": round(ours / n["jobs_per_s"], 2),
        "vs_in_process_1row_predict": round(ours / p["predict_1row_calls_per_s"], 2),
        "v2_infer_vs_mlqueue_predict": round(m["v2"]["jobs_per_s"] / m["predict"]["jobs_per_s"], 2),
    }
    print(
        "ratios (mlqueue jobs/s over each baseline): "
        + ", ".join(f"{k} {v}x" for k, v in ratio.items())
    )


if __name__ == "__main__":
    sys.exit(main())
