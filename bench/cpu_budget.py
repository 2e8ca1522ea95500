"""`make bench-cpu`: where the CPU of one 1-row job goes — gateway, worker, Redis, client.

Runs the whole system on this machine (one Redis, one worker, the gateway), drives it with
`bench.loadgen` for a fixed time per path, and divides the CPU seconds each process tree used
(from /proc, children included: gateway processes, the worker's prefork pool) by the jobs done.
CPU per job barely depends on what else the machine is doing, unlike jobs/s, so two commits can be
compared on a busy box; the jobs/s column is printed for context only.

    python -m bench.cpu_budget [--duration 10] [--clients 64] [--paths jobs,predict]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.bench import http_ready, loadgen, running
from bench.cases import write_cases
from devrun import processes

TICKS = os.sysconf("SC_CLK_TCK")
MODES = {"jobs": "jobs", "predict": "sync"}  # path name -> loadgen mode


def cpu_seconds(pid: int) -> float:
    """utime + stime of one live process (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and every live process below it."""
    return cpu_seconds(pid) + sum(cpu_seconds(p) for p in processes.descendants(pid))


def main() -> int:
    parser = argparse.ArgumentParser(description="CPU per 1-row job, per component")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--paths", default="jobs,predict")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mlqueue-cpu-"))
    cases = write_cases(work)
    redis_port, port = processes.free_port(), processes.free_port()
    env = {
        "MLQUEUE_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "MLQUEUE_MODEL_DIR": str(work / "models"),
        "MLQUEUE_PORT": str(port),
        "MLQUEUE_LOG_LEVEL": "WARNING",
    }
    url = f"http://127.0.0.1:{port}"
    report: dict[str, Any] = {"load_avg_before": os.getloadavg(), "args": vars(args)}
    redis = processes.start_redis(redis_port, work / "redis", log=work / "redis.log")
    try:
        with (
            running(processes.worker_argv(), env, work / "worker.log") as worker,
            running(processes.gateway_argv(), env, work / "gateway.log") as gateway,
        ):
            processes.wait_until(http_ready(f"{url}/readyz"), 60, "mlqueue", gateway)
            trees = {"gateway": gateway.pid, "worker": worker.pid, "redis": redis.pid}
            for path in args.paths.split(","):
                mode = MODES[path]
                loadgen(url, mode, cases, args.clients, 2)  # warm-up
                before = {name: tree_cpu(pid) for name, pid in trees.items()}
                load = loadgen(url, mode, cases, args.clients, args.duration)
                used = {name: tree_cpu(pid) - before[name] for name, pid in trees.items()}
                used["client"] = load["client_cpu_s"]
                jobs = max(1, load["jobs"])
                report[path] = {
                    "jobs_per_s": load["jobs_per_s"],
                    "errors": load["errors"] + load["mismatches"],
                    "cpu_ms_per_job": {k: round(1000 * v / jobs, 3) for k, v in used.items()},
                    "total_ms_per_job": round(1000 * sum(used.values()) / jobs, 3),
                }
    finally:
        processes.stop(redis)
    report["load_avg_after"] = os.getloadavg()
    print_table(report, args.paths.split(","))
    print(json.dumps(report))
    return 1 if any(report[p]["errors"] for p in args.paths.split(",")) else 0


def print_table(report: dict[str, Any], paths: list[str]) -> None:
    parts = ["gateway", "worker", "redis", "client"]
    print(
        f"\nCPU ms per 1-row job ({report['args']['clients']} clients, "
        f"load {report['load_avg_before'][0]:.2f})"
    )
    print(f"{'path':10} " + " ".join(f"{p:>8}" for p in [*parts, "total", "jobs/s"]))
    for path in paths:
        r = report[path]
        cells = [r["cpu_ms_per_job"][p] for p in parts] + [r["total_ms_per_job"], r["jobs_per_s"]]
        print(f"{path:10} " + " ".join(f"{c:>8}" for c in cells))


if __name__ == "__main__":
    sys.exit(main())
