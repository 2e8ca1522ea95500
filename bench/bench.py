"""`make bench`: mlqueue against its baselines, measured in one run on this machine.

Starts what it needs (redis-server, workers, servers), runs, stops everything, prints one table
and writes the figures as JSON and Markdown to bench/results/. Throughput is 1-row jobs end to
end, every HTTP system driven by the same client (`bench.loadgen`, 64 keep-alive clients), plus
sequential (one client) latency:
  1. mlqueue: the one-request `/predict` façade, and submit + long-poll result (two requests);
  2. Seldon MLServer 1.7.1 with adaptive batching (`bench.mlserver`: own venv, same model file);
  3. the article's synchronous FastAPI `/predict` (1 row per request);
  4. naive Celery: one task per 1-row job, JSON rows, plain `model.predict`;
  5. the in-process `model.predict` limit.
mlqueue and MLServer run side by side, their closed-loop runs in turns (`bench.head_to_head`;
`--repeats N` takes N rounds and reports medians). With `--open-loop` (`make bench-latency`),
mlqueue's two paths and MLServer are also driven at a constant arrival rate (`bench.openloop`) of
25/50/75/90 % of the capacity each showed above.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from redis import Redis
from sklearn.datasets import load_diabetes

from bench import table
from bench.drivers import drive, http_ready, running
from bench.head_to_head import head_to_head, round_ratios
from devrun import processes
from shared.registry import Registry
from worker.sklearn_model import SklearnModel
from worker.train import train_demo

RESULTS = Path(__file__).parent / "results"


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
        return drive(url, "predict", cases, args, open_loop=False)


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


SYSTEMS = ("mlqueue", "mlserver", "sync", "naive", "inprocess")
KEYS = {
    "mlqueue": "mlqueue",
    "mlserver": "mlserver",
    "sync": "sync_fastapi",
    "naive": "naive_celery",
    "inprocess": "in_process",
}


def main() -> int:
    parser = argparse.ArgumentParser(description="mlqueue throughput benchmark")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--sequential", type=int, default=300)
    parser.add_argument("--naive-jobs", type=int, default=3000)
    parser.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help=f"comma-separated subset of {','.join(SYSTEMS)} (default: all)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="rounds of mlqueue and MLServer closed-loop runs, in turns; rows are medians",
    )
    parser.add_argument(
        "--open-loop",
        action="store_true",
        help="also drive mlqueue and MLServer at 25/50/75/90 %% of their measured capacity",
    )
    parser.add_argument(
        "--open-loop-duration", dest="ol_s", type=float, default=10.0, help="seconds per level"
    )
    args = parser.parse_args()
    systems = [name.strip() for name in args.systems.split(",") if name.strip()]
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown --systems {sorted(unknown)}; choose from {','.join(SYSTEMS)}")
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
        "args": {**vars(args), "systems": systems},
    }
    # (--systems names, run): mlqueue and MLServer first and together, while the box is as alike
    # for both as one run allows.
    runs: list[tuple[set[str], Callable[[], dict[str, Any]]]] = [
        (
            {"mlqueue", "mlserver"},
            lambda: head_to_head(env, model_path, info.sha256, cases, args, work, systems),
        ),
        ({"sync"}, lambda: {"sync_fastapi": bench_sync(model_path, cases, args, work)}),
        (
            {"naive"},
            lambda: {
                "naive_celery": bench_naive_celery(redis_url, model_path, X.tolist(), args, work)
            },
        ),
        ({"inprocess"}, lambda: {"in_process": dict(bench_in_process(model_path, X))}),
    ]
    redis = processes.start_redis(redis_port, work / "redis", log=work / "redis.log")
    try:
        for names, run in runs:
            chosen = sorted(names & set(systems))
            if not chosen:
                continue
            print(f"bench: {', '.join(chosen)} ...", file=sys.stderr, flush=True)
            try:
                report.update(run())
            except Exception as exc:  # one broken baseline must not lose the others' figures
                error = {"error": f"{type(exc).__name__}: {exc}"}
                report.update({KEYS[name]: error for name in chosen})
                print(f"bench: {chosen} failed: {exc} (logs in {work})", file=sys.stderr)
            Redis.from_url(redis_url).flushall()
    finally:
        processes.stop(redis)
    report["load_avg_after"] = os.getloadavg()
    report["ratios"] = table.ratios(report)
    report["ratios_per_round"] = round_ratios(report)
    text, markdown = table.render(report)
    print(text)
    stem = RESULTS / f"bench-{report['when'].replace(':', '')}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2))
    stem.with_suffix(".md").write_text(markdown)
    print(f"\nwritten: {stem}.json and .md")
    return 1 if table.failures(report) else 0


if __name__ == "__main__":
    sys.exit(main())
