"""mlqueue against MLServer: both up at once, their closed-loop runs taken in turns.

The goal is a ratio (mlqueue's jobs/s over MLServer's), so the two are measured as close in time
as one machine allows: mlqueue (Redis, worker, gateway) and MLServer are started together and stay
up, idle but for the one being driven, and `--repeats N` runs the closed-loop client against
mlqueue `/predict`, mlqueue submit + long-poll and MLServer in turn, N rounds (every other one in
reverse order). Each system's row
is its median round (its errors summed over all rounds); the per-round ratios are kept too, so a
drift in the machine's load shows up as a spread instead of as a difference between systems.
Then each gets its sequential latency and, with --open-loop, its open-loop levels.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from bench import mlserver, openloop
from bench.drivers import finish, http_ready, loadgen, running
from devrun import processes


@contextmanager
def mlqueue_running(env: dict[str, str], args: argparse.Namespace, logs: Path) -> Iterator[str]:
    """A worker and the gateway (default settings) on the bench's Redis; yields the base URL."""
    port = processes.free_port()
    env = {
        **env,
        "MLQUEUE_PORT": str(port),
        "MLQUEUE_LOG_LEVEL": "WARNING",
        # The open-loop client keeps up to MAX_CONNECTIONS requests waiting, all on one (anonymous)
        # key; the default per-key cap (64) would answer the rest 429, which MLServer, keyless,
        # never does. Real traffic at that concurrency comes from many keys.
        "MLQUEUE_MAX_LONG_POLLS_PER_KEY": str(max(openloop.MAX_CONNECTIONS, args.clients)),
    }
    url = f"http://127.0.0.1:{port}"
    with (
        running(processes.worker_argv(), env, logs / "worker.log") as worker,
        running(processes.gateway_argv(), env, logs / "gateway.log") as gateway,
    ):
        processes.wait_until(http_ready(f"{url}/readyz"), 60, "mlqueue", gateway)
        if worker.poll() is not None:
            raise RuntimeError(f"the mlqueue worker exited with code {worker.returncode}")
        yield url


def median_round(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median jobs/s, with every round's rate and all rounds' errors."""
    middle = sorted(rounds, key=lambda r: r["jobs_per_s"])[(len(rounds) - 1) // 2]
    return {
        **middle,
        "errors": sum(r["errors"] for r in rounds),
        "mismatches": sum(r["mismatches"] for r in rounds),
        "rounds_jobs_per_s": [r["jobs_per_s"] for r in rounds],
    }


def head_to_head(
    env: dict[str, str],
    model_path: Path,
    sha256: str,
    cases: Path,
    args: argparse.Namespace,
    work: Path,
    systems: list[str],
) -> dict[str, Any]:
    """Report parts `mlqueue` (with `predict` inside) and `mlserver`, for those in `systems`.

    A system that fails to start gets `{"error": ...}` and the other is still measured.
    """
    found: dict[str, Any] = {}
    targets: list[tuple[str, str, str]] = []  # (part, url, loadgen mode)
    with ExitStack() as stack:
        if "mlqueue" in systems:
            try:
                url = stack.enter_context(mlqueue_running(env, args, work))
                targets += [
                    ("mlqueue_predict", url, "predict"),
                    ("mlqueue_v2", url, "v2"),  # the KServe V2 infer, over the same queue
                    ("mlqueue", url, "jobs"),
                ]
            except Exception as exc:  # MLServer is still measured, and the reverse
                found["mlqueue"] = _failed("mlqueue", exc, work)
        if "mlserver" in systems:
            started = time.perf_counter()
            try:
                url = stack.enter_context(
                    mlserver.running(model_path, sha256, work, work / "mlserver.log")
                )
                targets.append(("mlserver", url, "v2"))
                found["mlserver_setup"] = {
                    "requirements": list(mlserver.REQUIREMENTS),
                    "max_batch_size": mlserver.BATCH_SIZE,
                    "max_batch_time_s": mlserver.BATCH_TIME_S,
                    "parallel_workers": mlserver.PARALLEL_WORKERS,
                    "ready_after_s": round(time.perf_counter() - started, 1),  # incl. install
                }
            except Exception as exc:  # a failed install or start, with its message
                found["mlserver"] = _failed("mlserver", exc, work)
        for _, url, mode in targets:
            loadgen(url, mode, cases, args.clients, 2)  # warm-up
        rounds: dict[str, list[dict[str, Any]]] = {part: [] for part, _, _ in targets}
        for n in range(args.repeats):
            # Every other round in reverse order, so a steady drift in the box's other load
            # favours no system over the rounds.
            for part, url, mode in targets if n % 2 == 0 else targets[::-1]:
                rounds[part].append(loadgen(url, mode, cases, args.clients, args.duration))
        for part, url, mode in targets:
            found[part] = finish(url, mode, cases, args, median_round(rounds[part]))
    for sync in ("predict", "v2"):
        if "mlqueue" in found and f"mlqueue_{sync}" in found:
            found["mlqueue"][sync] = found.pop(f"mlqueue_{sync}")
    if "mlserver_setup" in found:
        found["mlserver"]["setup"] = found.pop("mlserver_setup")
    return found


def round_ratios(report: dict[str, Any]) -> dict[str, list[float]]:
    """mlqueue over MLServer in each round (the rounds' order pairs them in time)."""
    try:
        mls = report["mlserver"]["load"]["rounds_jobs_per_s"]
        paths = {
            "predict_vs_mlserver": report["mlqueue"]["predict"]["load"]["rounds_jobs_per_s"],
            "jobs_vs_mlserver": report["mlqueue"]["load"]["rounds_jobs_per_s"],
        }
    except (KeyError, TypeError):
        return {}
    return {
        name: [round(a / b, 2) if b else float("nan") for a, b in zip(ours, mls, strict=True)]
        for name, ours in paths.items()
    }


def _failed(name: str, exc: BaseException, work: Path) -> dict[str, str]:
    print(f"bench: {name} failed: {exc} (logs in {work})", file=sys.stderr)
    return {"error": f"{type(exc).__name__}: {exc}"}
