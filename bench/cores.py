"""How much two processes at once get done on this machine, compared with one alone.

Scale-out figures assume that each core adds a core's worth of work. On a virtual machine the
vCPUs may be hyperthreads of one physical core, or share it with other guests; then two busy
processes each run slower than one alone, and N workers whose CPU quotas add up to most of the
box cannot reach N times one worker's throughput however well the software scales. Measured with
the work the workers do (a 100-tree forest's `predict` on 22,100-row batches), one process for
`seconds`, then two at once.

    python -m bench.cores
"""

from __future__ import annotations

import multiprocessing
import time

import numpy as np
from sklearn.datasets import load_diabetes
from sklearn.ensemble import RandomForestRegressor


def _rows_per_s(seconds: float, start_at: float) -> float:
    X, y = load_diabetes(return_X_y=True)
    model = RandomForestRegressor(n_estimators=100, random_state=0).fit(X, y)
    batch = np.tile(X, (50, 1))
    time.sleep(max(0.0, start_at - time.time()))
    started, calls = time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        model.predict(batch)
        calls += 1
    return calls * len(batch) / (time.perf_counter() - started)


def parallel_speedup(seconds: float = 4.0) -> tuple[float, float, float]:
    """(rows/s of one process alone, of two at once together, their ratio)."""
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        alone = pool.apply(_rows_per_s, (seconds, time.time() + 1.0))
        start_at = time.time() + 1.0  # both fit their model first, then start together
        both = sum(pool.starmap(_rows_per_s, [(seconds, start_at)] * 2))
    return alone, both, both / alone


if __name__ == "__main__":
    one, two, ratio = parallel_speedup()
    print(f"one process {one:,.0f} rows/s; two at once {two:,.0f} rows/s together: {ratio:.2f}x")
