"""Direct enqueuers: N sender processes send one-row tasks straight to Celery, then collect them.

Measured with 1, 2 and 4 senders by default: on a small machine the senders' own CPU competes
with the worker's, and with the one consumer process that takes every message off the broker.
The same load for mlqueue's public `mlqueue.predict` (batched by the worker, see
`worker.direct_strategy`) and for the naive Celery baseline (`bench.naive_app`, one task, one
`predict`): each sender sends its share of the jobs as fast as it can, then waits for each
result. Jobs/s counts from the first send to the last result; every prediction is checked
against scikit-learn's.
"""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path
from typing import Any

from devrun import processes

DIRECT_TASK = "mlqueue.predict"


def _sender(
    redis_url: str, task: str, queue: str, rows: list[list[float]], start_at: float
) -> tuple[list[Any], float]:
    from celery import Celery

    client = Celery(broker=redis_url, backend=redis_url)
    client.conf.update(task_serializer="json", accept_content=["json"])
    cpu0 = time.process_time()
    time.sleep(max(0.0, start_at - time.time()))  # every sender starts at once
    if task == DIRECT_TASK:
        sent = [client.send_task(task, kwargs={"rows": [row]}, queue=queue) for row in rows]
    else:
        sent = [client.send_task(task, args=[[row]], queue=queue) for row in rows]
    answers = [result.get(timeout=300) for result in sent]
    client.close()
    return answers, time.process_time() - cpu0


def run_senders(
    redis_url: str,
    task: str,
    queue: str,
    rows: list[list[float]],
    expected: list[float],
    senders: int,
) -> dict[str, Any]:
    """`len(rows)` one-row tasks from `senders` processes; throughput and checked answers."""
    shares = [rows[i::senders] for i in range(senders)]
    wants = [expected[i::senders] for i in range(senders)]
    start_at = time.time() + 1.0  # after every sender process has started
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(senders) as pool:
        pending = [
            pool.apply_async(_sender, (redis_url, task, queue, share, start_at)) for share in shares
        ]
        outputs = [p.get(timeout=600) for p in pending]
    wall = time.time() - start_at
    mismatches = 0
    for (answers, _cpu), want in zip(outputs, wants, strict=True):
        got = [a["predictions"][0] if task == DIRECT_TASK else a[0] for a in answers]
        mismatches += sum(1 for g, w in zip(got, want, strict=True) if g != w)
    return {
        "senders": senders,
        "jobs": len(rows),
        "jobs_per_s": round(len(rows) / wall, 1),
        "client_cpu_s": round(sum(cpu for _, cpu in outputs), 2),
        "mismatches": mismatches,
    }


def bench_direct(
    env: dict[str, str],
    redis_url: str,
    rows: list[list[float]],
    expected: list[float],
    senders: list[int],
    logs: Path,
) -> list[dict[str, Any]]:
    """mlqueue's worker (as `make run` starts it) under `run_senders`, for each sender count."""
    from celery import Celery

    env = {**env, "MLQUEUE_LOG_LEVEL": "WARNING"}
    proc = processes.spawn(processes.worker_argv(), env, log=logs / "worker-direct.log")
    try:
        client = Celery(broker=redis_url, backend=redis_url)
        warm = client.send_task(DIRECT_TASK, kwargs={"rows": rows[:1]}, queue="mlqueue")
        warm.get(timeout=60)  # ready once a task round-trips
        client.close()
        return [run_senders(redis_url, DIRECT_TASK, "mlqueue", rows, expected, n) for n in senders]
    finally:
        processes.stop(proc)
