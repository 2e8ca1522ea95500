"""`make drill`: kill workers and Redis under real load, check that no accepted job is lost.

    python -m bench.drill [--jobs 30] [--outage 5]

Scenarios, each on a fresh private system (bench.stack) with Redis persistence on (AOF,
appendfsync always):
  child-kill   SIGKILL the prefork child running a job; the job completes once.
  worker-kill  SIGKILL a whole worker (process group) with jobs running and queued, start a new
               worker; every accepted job completes once, within 15 s of the new worker's start.
  redis-hang   SIGSTOP Redis under load: the gateway answers 503 + Retry-After within its timeout.
  redis-crash  SIGKILL Redis under load, restart it on the same port: the same, then service
               resumes with no restart of gateway or worker and no job that got a 202 is lost.
Every result is compared with the model's predictions computed here. Prints a summary table;
exits 1 on any loss, wrong result, 500, hang or slow recovery.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from bench.stack import Stack
from devrun.processes import children
from shared.registry import Registry
from tests.integration.models import Sleepy, add_model, row_sums
from worker.sklearn_model import SklearnModel
from worker.train import train_demo

AOF = ["--appendonly", "yes", "--appendfsync", "always"]
RECOVERY_LIMIT = 15.0
REDIS_TIMEOUT = 2.0
ENV = {
    "MLQUEUE_REDIS_TIMEOUT": str(REDIS_TIMEOUT),
    "MLQUEUE_LOG_LEVEL": "INFO",
}


@dataclass
class Outcome:
    """One scenario's figures and verdict."""

    name: str
    accepted: int = 0
    completed: int = 0
    wrong: int = 0
    lost: int = 0
    figures: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and self.lost == 0 and self.wrong == 0


class Drill:
    """Shared pieces: a registry with the demo model and a slow model, and expected results."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.models = root / "models"
        train_demo(Registry(self.models, "demo"), "demo")
        self.pidfile = root / "sleepy.pid"
        add_model(self.models, "sleepy", Sleepy(2.0, pidfile=str(self.pidfile)))
        self.demo = SklearnModel.load(self.models / "demo" / "1" / "model.skops")
        rng = np.random.default_rng(0)
        self.rows = [rng.normal(0, 0.05, (int(n), 10)).tolist() for n in rng.integers(1, 11, 64)]

    def expected(self, rows: list[list[float]], model: str) -> list[float]:
        if model == "sleepy":
            return row_sums(rows)
        return [float(v) for v in self.demo.predict(np.asarray(rows))]

    def stack(self, name: str, **env: str) -> Stack:
        return Stack(self.root / name, self.models, env={**ENV, **env}, redis_args=AOF)


def check_all(
    http: httpx.Client, drill: Drill, jobs: dict[str, tuple[list[list[float]], str]], out: Outcome
) -> float:
    """Wait for every job; count completed, wrong and lost; returns when the last one ended.

    The waits share one deadline (60 s), so a stuck system fails the drill instead of hanging it.
    """
    last = time.monotonic()
    deadline = last + 60
    for job_id, (rows, model) in jobs.items():
        wait = max(0.0, min(30.0, deadline - time.monotonic()))
        response = http.get(f"/v1/jobs/{job_id}/result", params={"wait": wait})
        if response.status_code == 200:
            out.completed += 1
            last = time.monotonic()
            if response.json()["data"] != drill.expected(rows, model):
                out.wrong += 1
        else:
            out.lost += 1
            out.problems.append(f"{job_id}: {response.status_code} {response.text[:120]}")
    return last


def slow_runs(drill: Drill) -> int:
    """How many times the slow model was called (it logs each call's pid)."""
    return len(drill.pidfile.read_text().split()) if drill.pidfile.exists() else 0


def submit(http: httpx.Client, drill: Drill, i: int, model: str = "demo") -> tuple[str, list]:
    rows = drill.rows[i % len(drill.rows)]
    response = http.post("/v1/jobs", json={"data": rows, "model": model})
    response.raise_for_status()
    return str(response.json()["job_id"]), rows


def child_kill(drill: Drill, n_jobs: int) -> Outcome:
    out = Outcome("child-kill")
    stack = drill.stack("child-kill", MLQUEUE_VISIBILITY_TIMEOUT="12")
    try:
        stack.start(concurrency=2)
        with httpx.Client(base_url=stack.base_url, timeout=40) as http:
            drill.pidfile.unlink(missing_ok=True)
            jobs = {}
            job_id, rows = submit(http, drill, 0, "sleepy")
            jobs[job_id] = (rows, "sleepy")
            for i in range(n_jobs):
                job_id, rows = submit(http, drill, i + 1)
                jobs[job_id] = (rows, "demo")
            wait(lambda: drill.pidfile.exists() and drill.pidfile.read_text() != "", 30)
            child = int(drill.pidfile.read_text().split()[0])
            assert child in children(stack.workers["w1"].pid)
            killed = time.monotonic()
            os.kill(child, signal.SIGKILL)
            out.accepted = len(jobs)
            last = check_all(http, drill, jobs, out)
            out.figures["all done after kill"] = f"{last - killed:.1f} s"
        runs = slow_runs(drill)
        out.figures["slow job runs"] = f"{runs} (killed once, then once)"
        if runs != 2:
            out.problems.append(f"the slow job ran {runs} times, expected 2")
    finally:
        stack.stop()
    return out


def worker_kill(drill: Drill, n_jobs: int) -> Outcome:
    out = Outcome("worker-kill")
    stack = drill.stack("worker-kill")
    try:
        stack.start(concurrency=2)
        with httpx.Client(base_url=stack.base_url, timeout=40) as http:
            drill.pidfile.unlink(missing_ok=True)
            jobs = {}
            for i in range(2):  # both children busy with slow jobs, the rest queued behind them
                job_id, rows = submit(http, drill, i, "sleepy")
                jobs[job_id] = (rows, "sleepy")
            for i in range(n_jobs):
                job_id, rows = submit(http, drill, i + 2)
                jobs[job_id] = (rows, "demo")
            wait(lambda: _running(http, jobs) >= 1, 30)
            running = _running(http, jobs)
            calls_at_kill = slow_runs(drill)
            stack.kill_worker("w1")
            killed = time.monotonic()
            time.sleep(1.0)
            started = stack.start_worker("w2", concurrency=2, wait=False)
            out.accepted = len(jobs)
            last = check_all(http, drill, jobs, out)
            recovery = last - started
            out.figures.update(
                {
                    "running at kill": str(running),
                    "new worker started after kill": f"{started - killed:.1f} s",
                    "recovery after new worker start": f"{recovery:.1f} s",
                }
            )
            if recovery > RECOVERY_LIMIT:
                out.problems.append(f"recovery {recovery:.1f} s > {RECOVERY_LIMIT:g} s")
        # Each model call cut by the kill runs again exactly once (two jobs may share a call).
        runs = slow_runs(drill)
        out.figures["slow model calls"] = f"{calls_at_kill} killed, {runs - calls_at_kill} after"
        if runs != 2 * calls_at_kill:
            out.problems.append(f"slow model ran {runs} times, expected {2 * calls_at_kill}")
    finally:
        stack.stop()
    return out


def _running(http: httpx.Client, jobs: dict[str, tuple[list[list[float]], str]]) -> int:
    return sum(http.get(f"/v1/jobs/{j}").json()["status"] == "running" for j in list(jobs)[:2])


def redis_outage(drill: Drill, outage: float, crash: bool) -> Outcome:
    out = Outcome("redis-crash" if crash else "redis-hang")
    stack = drill.stack(out.name)
    try:
        stack.start(concurrency=2)
        asyncio.run(_outage_load(stack, drill, outage, crash, out))
    finally:
        if crash is False and stack.redis_proc is not None:
            os.kill(stack.redis_proc.pid, signal.SIGCONT)
        stack.stop()
    return out


async def _outage_load(
    stack: Stack, drill: Drill, outage: float, crash: bool, out: Outcome
) -> None:
    accepted: dict[str, tuple[list[list[float]], str]] = {}
    statuses: Counter[int] = Counter()
    slowest = [0.0]
    down = asyncio.Event()
    stop = asyncio.Event()

    async def client(i: int, http: httpx.AsyncClient) -> None:
        n = i
        while not stop.is_set():
            rows = drill.rows[n % len(drill.rows)]
            n += 8
            started = time.monotonic()
            try:
                response = await http.post("/v1/jobs", json={"data": rows})
            except httpx.HTTPError as exc:
                out.problems.append(f"transport error {type(exc).__name__}")
                continue
            took = time.monotonic() - started
            statuses[response.status_code] += 1
            if down.is_set():
                slowest[0] = max(slowest[0], took)
            if response.status_code == 202:
                accepted[response.json()["job_id"]] = (rows, "demo")
            elif response.status_code == 503:
                assert "retry-after" in response.headers
                await asyncio.sleep(0.2)
            else:
                out.problems.append(f"status {response.status_code}: {response.text[:100]}")
            await asyncio.sleep(0.05)

    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
        tasks = [asyncio.create_task(client(i, http)) for i in range(8)]
        await asyncio.sleep(2.0)
        before, answered_before = len(accepted), Counter(statuses)
        assert stack.redis_proc is not None
        pid = stack.redis_proc.pid
        os.kill(pid, signal.SIGKILL if crash else signal.SIGSTOP)
        down.set()
        went_down = time.monotonic()
        await asyncio.sleep(outage)
        during = Counter(statuses)
        during.subtract(answered_before)
        if crash:
            stack.redis_proc.wait(5)
            stack.start_redis()  # same port, same dir: the AOF is replayed
        else:
            os.kill(pid, signal.SIGCONT)
        back = time.monotonic()
        down.clear()
        n_before = len(accepted)
        while len(accepted) == n_before and time.monotonic() - back < 30:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        resumed = time.monotonic() - back
        await asyncio.sleep(2.0)
        stop.set()
        await asyncio.gather(*tasks)
    out.accepted = len(accepted)
    alive = [name for name, proc in stack.workers.items() if proc.poll() is None]
    out.figures["worker survived"] = "yes" if alive else "NO"
    if not alive:
        out.problems.append("the worker exited during the outage")
    with httpx.Client(base_url=stack.base_url, timeout=40) as sync:
        check_all(sync, drill, accepted, out)
    out.figures.update(
        {
            "accepted before outage": str(before),
            "answers during outage": ", ".join(f"{k}: {v}" for k, v in sorted(during.items())),
            "slowest answer while down": f"{slowest[0]:.2f} s (timeout {REDIS_TIMEOUT:g} s)",
            "outage": f"{back - went_down:.1f} s",
            "first 202 after Redis is back": f"{resumed:.1f} s",
        }
    )
    if statuses[500]:
        out.problems.append(f"{statuses[500]} answers were 500")
    if slowest[0] > 2 * REDIS_TIMEOUT + 1:
        out.problems.append(f"an answer took {slowest[0]:.1f} s while Redis was down")


def wait(check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("drill: condition not met in time")
        time.sleep(0.05)


def table(outcomes: list[Outcome]) -> str:
    lines = [
        "| scenario | accepted | completed | wrong | lost | figures | verdict |",
        "|---" * 7 + "|",
    ]
    for o in outcomes:
        figures = "; ".join(f"{k}: {v}" for k, v in o.figures.items())
        verdict = "OK" if o.ok else "FAIL: " + "; ".join(o.problems[:3])
        counts = f"{o.accepted} | {o.completed} | {o.wrong} | {o.lost}"
        lines.append(f"| {o.name} | {counts} | {figures} | {verdict} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=30, help="jobs queued behind the kill")
    parser.add_argument("--outage", type=float, default=5.0, help="seconds Redis stays down")
    parser.add_argument("--only", nargs="*", default=[], help="scenarios to run (default: all)")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="mlqueue-drill-"))
    drill = Drill(root)
    scenarios: dict[str, Callable[[], Outcome]] = {
        "child-kill": lambda: child_kill(drill, args.jobs),
        "worker-kill": lambda: worker_kill(drill, args.jobs),
        "redis-hang": lambda: redis_outage(drill, args.outage, crash=False),
        "redis-crash": lambda: redis_outage(drill, args.outage, crash=True),
    }
    outcomes = []
    for name, run in scenarios.items():
        if args.only and name not in args.only:
            continue
        print(f"drill: {name} ...", flush=True)
        try:
            outcomes.append(run())
        except Exception as exc:  # a scenario that breaks is a failed scenario, not a crash
            failed = Outcome(name)
            failed.problems.append(f"{type(exc).__name__}: {exc}")
            outcomes.append(failed)
    print(table(outcomes))
    print(f"logs: {root}")
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
