"""Benchmark of bulk CSV scoring (`make bench-csv`); not a test.

Generates an N-row CSV for the demo model (10 features, with a header) into bench/data/, starts
Redis, one worker and the gateway (as `make run` does), and times upload -> scoring -> result file
through the live system. In the same run it times the single-process baseline that does the same
work with the best libraries: pandas read_csv (C engine) -> model.predict -> pyarrow write_csv.
Prints both rows/s, their ratio and the gateway's peak RSS (VmHWM); writes JSON to bench/results/.

    python bench/csv_bench.py [--rows 1000000] [--concurrency 2]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
from sklearn.datasets import load_diabetes

from client import Client
from devrun import processes
from shared.registry import Registry
from worker.sklearn_model import SklearnModel
from worker.train import train_demo

HERE = Path(__file__).parent
DATA, RESULTS = HERE / "data", HERE / "results"


def make_csv(rows: int) -> Path:
    """Real diabetes rows with a little noise, shortest-repr floats (about 190 bytes a line)."""
    path = DATA / f"demo_{rows}.csv"
    if path.exists():
        return path
    DATA.mkdir(parents=True, exist_ok=True)
    data = load_diabetes()
    rng = np.random.default_rng(0)
    X = data.data[rng.integers(0, len(data.data), rows)] + rng.normal(0, 0.001, (rows, 10))
    table = pa.table({name: X[:, j] for j, name in enumerate(data.feature_names)})
    pacsv.write_csv(table, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").rename(path)
    return path


def baseline(source: Path, model_path: Path, target: Path) -> float:
    """Seconds for pandas read -> predict -> pyarrow write, in this one process."""
    started = time.perf_counter()
    frame = pd.read_csv(source, engine="c")
    model = SklearnModel.load(model_path)
    predictions = model.predict(frame.to_numpy(dtype=np.float64))
    pacsv.write_csv(pa.table({"prediction": predictions}), target)
    return time.perf_counter() - started


def end_to_end(base_url: str, source: Path, target: Path) -> tuple[float, dict[str, object]]:
    """Seconds from the first byte uploaded to the last byte of the result file written."""
    with Client(base_url, timeout=120) as client:
        started = time.perf_counter()
        job = client.submit_csv(source)
        uploaded = time.perf_counter() - started
        view = client.wait(job.job_id)  # long polls: returns as soon as the job ends
        assert view.status == "succeeded", view
        client.download(job.job_id, target)
    elapsed = time.perf_counter() - started
    return elapsed, {"upload_returned_s": round(uploaded, 2), **view.model_dump(mode="json")}


def peak_rss_mb(pid: int) -> float:
    """The largest peak resident set (VmHWM, MB) of the gateway's processes: it forks one
    server per MLQUEUE_GATEWAY_WORKERS, and one of them took the upload."""
    peaks = []
    for proc in (pid, *processes.children(pid)):
        for line in Path(f"/proc/{proc}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peaks.append(int(line.split()[1]) / 1024)
    return max(peaks, default=float("nan"))


def main() -> None:
    """Run both pipelines once and report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--concurrency", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    source = make_csv(args.rows)
    work = Path(tempfile.mkdtemp(prefix="mlqueue-bench-"))
    registry = Registry(work / "models", "demo")
    train_demo(registry, "demo")
    model_path = work / "models" / "demo" / "1" / "model.skops"

    base_s = baseline(source, model_path, work / "baseline.csv")
    redis_port, http_port = processes.free_port(), processes.free_port()
    env = {
        "MLQUEUE_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "MLQUEUE_MODEL_DIR": str(work / "models"),
        "MLQUEUE_PORT": str(http_port),
        "MLQUEUE_LOG_LEVEL": "WARNING",
    }
    started = [processes.start_redis(redis_port, work / "redis", log=work / "redis.log")]
    try:
        started.append(processes.spawn(processes.worker_argv(args.concurrency), env))
        gateway = processes.spawn(processes.gateway_argv(), env, log=work / "gateway.log")
        started.append(gateway)
        base_url = f"http://127.0.0.1:{http_port}"
        processes.wait_until(lambda: _ready(base_url), 60, "gateway /readyz", gateway)
        e2e_s, view = end_to_end(base_url, source, work / "e2e.csv")
        rss = peak_rss_mb(gateway.pid)
    finally:
        for proc in reversed(started):
            processes.stop(proc)
    same = _same(work / "baseline.csv", work / "e2e.csv")
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "rows": args.rows,
        "file_mb": round(source.stat().st_size / 1e6, 1),
        "worker_concurrency": args.concurrency,
        "baseline_s": round(base_s, 2),
        "baseline_rows_per_s": round(args.rows / base_s),
        "end_to_end_s": round(e2e_s, 2),
        "end_to_end_rows_per_s": round(args.rows / e2e_s),
        "ratio": round(base_s / e2e_s, 3),
        "gateway_peak_rss_mb": round(rss, 1),
        "outputs_equal": same,
        "loadavg_after": os.getloadavg(),
        "job": view,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"csv-{args.rows}-{report['when']}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"{args.rows} rows ({report['file_mb']} MB): single process {report['baseline_rows_per_s']}"
        f" rows/s, end to end {report['end_to_end_rows_per_s']} rows/s, ratio {report['ratio']};"
        f" gateway peak RSS {report['gateway_peak_rss_mb']} MB; outputs equal: {same}\n{out}"
    )


def _same(baseline_csv: Path, e2e_csv: Path) -> bool:
    a = pd.read_csv(baseline_csv)["prediction"].to_numpy()
    b = pd.read_csv(e2e_csv)["prediction"].to_numpy()
    return bool(len(a) == len(b) and np.array_equal(a, b))


def _ready(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    main()
