"""`make bench-ab REF=<commit>`: is this checkout faster or slower than another commit?

Runs the same 1-row load against the system built from `REF` (exported with `git archive` to a
temporary folder, run with this checkout's interpreter and packages) and from this checkout, in
alternating rounds (A B A B ...) so that a change in the machine's load hits both alike. Prints
the median jobs/s and CPU ms per job of each side per path, and the ratio this / REF.

    python -m bench.ab --ref 540203d [--rounds 3] [--duration 10] [--paths jobs,predict]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.cases import write_cases
from bench.cpu_budget import measure
from bench.stack import system

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def export(ref: str, into: Path) -> str:
    """`ref`'s tree under `into`; returns its short commit id."""
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", f"{ref}^{{commit}}"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    archive = into.with_suffix(".tar")
    subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", "-o", str(archive), commit], check=True
    )
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return commit


def main() -> int:
    parser = argparse.ArgumentParser(description="A/B: this checkout against another commit")
    parser.add_argument("--ref", required=True, help="the commit to compare with (A)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--paths", default="jobs,predict")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mlqueue-ab-"))
    commit = export(args.ref, work / "ref")
    cases = write_cases(work)
    sides = {f"A {commit}": work / "ref", "B this checkout": ROOT}
    paths = args.paths.split(",")
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {s: {p: [] for p in paths} for s in sides}
    report: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_avg_before": os.getloadavg(),
        "args": vars(args),
    }
    for _ in range(args.rounds):
        for side, source in sides.items():
            with system(work, source=source) as running:
                for path in paths:
                    runs[side][path].append(
                        measure(running, path, cases, args.clients, args.duration)
                    )
    report["load_avg_after"] = os.getloadavg()
    report["runs"] = runs
    print_table(report, sides, paths)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"ab-{commit}-{report['when'].replace(':', '')}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"written: {out}")
    failures = sum(r["errors"] for side in runs.values() for rs in side.values() for r in rs)
    return 1 if failures else 0


def print_table(report: dict[str, Any], sides: dict[str, Path], paths: list[str]) -> None:
    args = report["args"]
    print(
        f"\n1-row jobs, {args['clients']} clients, {args['rounds']} alternating rounds of "
        f"{args['duration']:g} s; load {report['load_avg_before'][0]:.2f} before, "
        f"{report['load_avg_after'][0]:.2f} after (medians)"
    )
    print(f"{'path':9} {'side':22} {'jobs/s':>8} {'gateway':>8} {'worker':>8} {'redis':>8} "
          f"{'total':>8}  CPU ms per job")  # fmt: skip
    for path in paths:
        medians = {}
        for side in sides:
            rs = report["runs"][side][path]
            rate = statistics.median(r["jobs_per_s"] for r in rs)
            cpu = {
                part: statistics.median(r["cpu_ms_per_job"][part] for r in rs)
                for part in ("gateway", "worker", "redis")
            }
            total = statistics.median(r["total_ms_per_job"] for r in rs)
            medians[side] = (rate, total)
            print(
                f"{path:9} {side:22} {rate:>8.1f} {cpu['gateway']:>8.3f} {cpu['worker']:>8.3f} "
                f"{cpu['redis']:>8.3f} {total:>8.3f}"
            )
        (a_rate, a_cpu), (b_rate, b_cpu) = medians.values()
        print(f"{path:9} {'B / A':22} {b_rate / a_rate:>8.3f} {'':>26} {b_cpu / a_cpu:>8.3f}")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
