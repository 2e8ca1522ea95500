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

from bench.cases import write_cases
from bench.drivers import loadgen
from bench.stack import System, system
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


def measure(
    running: System, path: str, cases: Path, clients: int, duration: float
) -> dict[str, Any]:
    """Drive one path (`MODES`) after a warm-up; jobs/s, errors and CPU ms per job for each
    process tree of the system and for the load generator ("client")."""
    mode = MODES[path]
    loadgen(running.url, mode, cases, clients, 2)  # warm-up
    before = {name: tree_cpu(pid) for name, pid in running.pids.items()}
    load = loadgen(running.url, mode, cases, clients, duration)
    used = {name: tree_cpu(pid) - before[name] for name, pid in running.pids.items()}
    used["client"] = load["client_cpu_s"]
    jobs = max(1, load["jobs"])
    return {
        "jobs_per_s": load["jobs_per_s"],
        "p99_ms": load["p99_ms"],
        "errors": load["errors"] + load["mismatches"],
        "cpu_ms_per_job": {k: round(1000 * v / jobs, 3) for k, v in used.items()},
        "total_ms_per_job": round(1000 * sum(used.values()) / jobs, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description="CPU per 1-row job, per component")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--paths", default="jobs,predict")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mlqueue-cpu-"))
    cases = write_cases(work)
    report: dict[str, Any] = {"load_avg_before": os.getloadavg(), "args": vars(args)}
    with system(work) as running:
        for path in args.paths.split(","):
            report[path] = measure(running, path, cases, args.clients, args.duration)
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
