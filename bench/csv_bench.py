"""Benchmark of bulk CSV scoring (`make bench-csv`); not a test.

Generates an N-row CSV for the demo model (10 features, with a header) into bench/data/, starts
Redis, one worker and the gateway (as `make run` does), and times upload -> scoring -> result file
through the live system. In the same run it times single scripts that do the same work with the
best libraries: pandas read_csv (C engine) -> predict -> pyarrow write_csv, once on one core
(`model.predict`) and once spread over both cores, in the three ways such a script would (the best
one is the two-core baseline): scikit-learn's `n_jobs=2`, two threads each predicting half the rows
(the trees release the GIL), and two forked processes each predicting half, all with
scikit-learn's own `predict`, as a user's script would call it; then, not as a baseline, the
2-thread script with mlqueue's compiled forest walk (`worker.forest_kernel`). Prints every rows/s,
mlqueue's ratio to the one-core and to the best two-core script, and the gateway's peak RSS
(VmHWM); writes JSON to bench/results/.

    python bench/csv_bench.py [--rows 1000000] [--concurrency 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
from sklearn.datasets import load_diabetes

from client import Client
from devrun import processes
from shared.registry import Registry
from worker import forest_kernel
from worker.sklearn_model import SklearnModel
from worker.train import train_demo

HERE = Path(__file__).parent
DATA, RESULTS = HERE / "data", HERE / "results"
Matrix = npt.NDArray[np.float64]


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


def compiled_predict_cpu(source: Path, model_path: Path) -> float:
    """CPU seconds of mlqueue's compiled walk predicting every row, in this process."""
    X = pd.read_csv(source, engine="c").to_numpy(dtype=np.float64)
    model = SklearnModel.load(model_path)  # builds and compiles the walk: not timed
    cpu = time.process_time()
    model.predict(X)
    return time.process_time() - cpu


def baseline(source: Path, model_path: Path, target: Path) -> tuple[float, float]:
    """Seconds for pandas read -> predict -> pyarrow write, in this one process on one core,
    and the CPU seconds of its predict step alone (scikit-learn's own `predict`)."""
    started = time.perf_counter()
    frame = pd.read_csv(source, engine="c")
    model = SklearnModel.load(model_path, fast=False)
    X = frame.to_numpy(dtype=np.float64)
    cpu = time.process_time()
    predictions = model.predict(X)
    cpu = time.process_time() - cpu
    pacsv.write_csv(pa.table({"prediction": predictions}), target)
    return time.perf_counter() - started, cpu


TWO_CORES = ("n_jobs=2", "2 threads", "2 processes")
# Not a baseline: the 2-thread script with the compiled forest walk mlqueue's workers use
# (worker/forest_kernel.py), which a user's script would not have; printed to show how much of
# mlqueue's lead is that walk and how much the pipeline.
COMPILED = "2 threads, mlqueue's compiled walk"
_forked: tuple[SklearnModel, Matrix] | None = None  # what `_predict_rows` reads in a forked child


def _predict_rows(bounds: tuple[int, int]) -> Matrix:
    assert _forked is not None
    model, X = _forked
    return model.predict(X[bounds[0] : bounds[1]])


def two_core(source: Path, model_path: Path, target: Path, how: str) -> float:
    """Seconds for the same script with the predictions spread over two cores, `how` says how.

    Everything a script would pay is inside the timing: loading, pool start, joining the halves.
    Rows are independent, so halves predicted apart equal the whole predicted at once.
    """
    global _forked
    started = time.perf_counter()
    frame = pd.read_csv(source, engine="c")
    X = frame.to_numpy(dtype=np.float64)
    halves = [(0, len(X) // 2), (len(X) // 2, len(X))]
    if how == "n_jobs=2":
        model = SklearnModel.load(model_path, fast=False)
        model.estimator.set_params(n_jobs=2)
        predictions = model.predict(X)
    elif how in ("2 threads", COMPILED):
        model = SklearnModel.load(model_path, fast=how == COMPILED)
        with ThreadPoolExecutor(2) as pool:
            predictions = np.concatenate(
                list(pool.map(lambda b: model.predict(X[b[0] : b[1]]), halves))
            )
    elif how == "2 processes":
        # fork: the children see the parsed rows and the loaded model without copying them.
        _forked = (SklearnModel.load(model_path, fast=False), X)
        try:
            with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as pool:
                predictions = np.concatenate(list(pool.map(_predict_rows, halves, timeout=600)))
        finally:
            _forked = None
    else:
        raise ValueError(f"unknown two-core way {how!r}")
    pacsv.write_csv(pa.table({"prediction": predictions}), target)
    return time.perf_counter() - started


def warm_up(base_url: str, source: Path) -> None:
    """A small job through the system, so that no worker process is still starting."""
    with Client(base_url, timeout=120) as client, source.open("rb") as whole:
        head = b"".join(whole.readline() for _ in range(101))
        warm = client.submit_csv(io.BytesIO(head))
        assert client.wait(warm.job_id).status == "succeeded"


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


def one_round(
    source: Path, model_path: Path, work: Path, base_url: str
) -> tuple[dict[str, float], float, dict[str, object]]:
    """Seconds of every pipeline, one after the other (the scripts, then mlqueue), the CPU
    seconds of the one-core script's predict step, and mlqueue's job record."""
    seconds: dict[str, float] = {}
    seconds["one core"], predict_cpu_s = baseline(source, model_path, work / "baseline.csv")
    for i, how in enumerate((*TWO_CORES, COMPILED)):
        seconds[how] = two_core(source, model_path, work / f"two-{i}.csv", how)
    seconds["mlqueue"], view = end_to_end(base_url, source, work / "e2e.csv")
    return seconds, predict_cpu_s, view


def main() -> None:
    """Run every pipeline `--repeats` times, in turn, and report medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--concurrency", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=3, help="rounds of every pipeline")
    args = parser.parse_args()
    source = make_csv(args.rows)
    loadavg_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="mlqueue-bench-"))
    registry = Registry(work / "models", "demo")
    info = train_demo(registry, "demo")
    model_path = work / "models" / "demo" / info.version / info.artifact
    forest_kernel.compile_kernel()  # once per process, as numba does: not the script's work
    compiled_cpu_s = compiled_predict_cpu(source, model_path)
    redis_port, http_port = processes.free_port(), processes.free_port()
    env = {
        "MLQUEUE_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "MLQUEUE_MODEL_DIR": str(work / "models"),
        "MLQUEUE_PORT": str(http_port),
        "MLQUEUE_LOG_LEVEL": "WARNING",
    }
    started = [processes.start_redis(redis_port, work / "redis", log=work / "redis.log")]
    try:
        worker = processes.worker_argv(args.concurrency)
        started.append(processes.spawn(worker, env, log=work / "worker.log"))
        gateway = processes.spawn(processes.gateway_argv(), env, log=work / "gateway.log")
        started.append(gateway)
        base_url = f"http://127.0.0.1:{http_port}"
        processes.wait_until(lambda: _ready(base_url), 60, "gateway /readyz", gateway)
        warm_up(base_url, source)
        # Rounds in turn, so that a noisy minute on the box weighs on every pipeline alike.
        measured = [one_round(source, model_path, work, base_url) for _ in range(args.repeats)]
        rss = peak_rss_mb(gateway.pid)
    finally:
        for proc in reversed(started):
            processes.stop(proc)
    rounds, view = [m[0] for m in measured], measured[-1][2]
    predict_cpu_s = statistics.median(m[1] for m in measured)
    s = {name: statistics.median(r[name] for r in rounds) for name in rounds[0]}
    best = min(TWO_CORES, key=lambda how: s[how])
    # Per round: the best two-core script of that round over mlqueue in that round.
    per_round = [min(r[how] for how in TWO_CORES) / r["mlqueue"] for r in rounds]
    two_core_report = {
        how: {
            "s": round(s[how], 2),
            "rows_per_s": round(args.rows / s[how]),
            # n_jobs=2 sums the trees in thread order: equal to the last bits, not bit for bit.
            "outputs_close": _same(work / "baseline.csv", work / f"two-{i}.csv", exact=False),
        }
        for i, how in enumerate(TWO_CORES)
    }
    compiled_file = work / f"two-{len(TWO_CORES)}.csv"
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "rows": args.rows,
        "file_mb": round(source.stat().st_size / 1e6, 1),
        "worker_concurrency": args.concurrency,
        "repeats": args.repeats,
        "rounds_s": [{name: round(v, 2) for name, v in r.items()} for r in rounds],
        "baseline_s": round(s["one core"], 2),
        "baseline_rows_per_s": round(args.rows / s["one core"]),
        "two_core": two_core_report,
        # CPU time, so other load on the box hardly moves it: whatever scores every row with this
        # model on two cores, parsing and all the rest aside, cannot go faster than this.
        "predict_cpu_s": round(predict_cpu_s, 2),
        "two_core_predict_ceiling_rows_per_s": round(args.rows / (predict_cpu_s / 2)),
        "compiled_predict_cpu_s": round(compiled_cpu_s, 2),
        "compiled_two_core_predict_ceiling_rows_per_s": round(args.rows / (compiled_cpu_s / 2)),
        "compiled_script_s": round(s[COMPILED], 2),
        "compiled_script_rows_per_s": round(args.rows / s[COMPILED]),
        "ratio_vs_compiled_script": round(s[COMPILED] / s["mlqueue"], 3),
        "compiled_script_outputs_equal": _same(work / "baseline.csv", compiled_file),
        "two_core_best": best,
        "two_core_best_rows_per_s": round(args.rows / s[best]),
        "end_to_end_s": round(s["mlqueue"], 2),
        "end_to_end_rows_per_s": round(args.rows / s["mlqueue"]),
        "ratio": round(s["one core"] / s["mlqueue"], 3),
        "ratio_vs_two_core": round(statistics.median(per_round), 3),
        "ratio_vs_two_core_per_round": [round(x, 3) for x in per_round],
        "gateway_peak_rss_mb": round(rss, 1),
        "outputs_equal": _same(work / "baseline.csv", work / "e2e.csv"),
        "loadavg_before": loadavg_before,
        "loadavg_after": os.getloadavg(),
        "job": view,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"csv-{args.rows}-{report['when']}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(report))
    print(
        f"{args.rows} rows ({report['file_mb']} MB), load average {loadavg_before[0]:.2f} before,"
        f" medians of {args.repeats} rounds:\n"
        f"  {'one-core script':<24} {report['baseline_rows_per_s']:>9,} rows/s\n"
        + "".join(
            f"  {'two cores, ' + how:<24} {r['rows_per_s']:>9,} rows/s"
            f" (outputs close: {r['outputs_close']})\n"
            for how, r in two_core_report.items()
        )
        + f"  {'predict alone, 2 cores':<24} {report['two_core_predict_ceiling_rows_per_s']:>9,}"
        f" rows/s at most with scikit-learn's predict (CPU {report['predict_cpu_s']} s),"
        f" {report['compiled_two_core_predict_ceiling_rows_per_s']:,} with mlqueue's compiled"
        f" walk (CPU {report['compiled_predict_cpu_s']} s)\n"
        + f"  {'mlqueue end to end':<24} {report['end_to_end_rows_per_s']:>9,} rows/s: "
        f"{report['ratio']}x the one-core script, {report['ratio_vs_two_core']}x the best two-core"
        f" one ({best}; per round {report['ratio_vs_two_core_per_round']})\n"
        f"  not a baseline: {COMPILED}: {report['compiled_script_rows_per_s']:,} rows/s"
        f" (mlqueue {report['ratio_vs_compiled_script']}x it; outputs equal:"
        f" {report['compiled_script_outputs_equal']})\n"
        f"  gateway peak RSS {report['gateway_peak_rss_mb']} MB; outputs equal:"
        f" {report['outputs_equal']}\n{out}"
    )


def markdown(report: dict[str, Any]) -> str:
    """The run as a Markdown table, for docs/benchmarks.md."""
    rows = report["rows"]
    lines = [
        f"# `make bench-csv` {report['when']}",
        "",
        f"{rows:,} rows ({report['file_mb']} MB), worker concurrency "
        f"{report['worker_concurrency']}, load average {report['loadavg_before'][0]:.2f} before, "
        f"{report['loadavg_after'][0]:.2f} after",
        "",
        "| pipeline | s | rows/s | mlqueue over it |",
        "| --- | ---: | ---: | ---: |",
        f"| one-core script (pandas -> predict -> pyarrow) | {report['baseline_s']} | "
        f"{report['baseline_rows_per_s']:,} | {report['ratio']}x |",
    ]
    e2e = report["end_to_end_s"]
    lines[2] += f", medians of {report['repeats']} rounds"
    for how, r in report["two_core"].items():
        lines.append(
            f"| two-core script, {how} | {r['s']} | {r['rows_per_s']:,} "
            f"| {round(r['s'] / e2e, 3)}x |"
        )
    lines.append(
        f"| not a baseline: {COMPILED} | {report['compiled_script_s']} | "
        f"{report['compiled_script_rows_per_s']:,} | {report['ratio_vs_compiled_script']}x |"
    )
    lines.append(f"| mlqueue end to end | {e2e} | {report['end_to_end_rows_per_s']:,} | |")
    lines += [
        "",
        f"mlqueue over the best two-core script ({report['two_core_best']}), median of the"
        f" rounds' ratios: {report['ratio_vs_two_core']}x (per round:"
        f" {', '.join(f'{x}x' for x in report['ratio_vs_two_core_per_round'])}).",
    ]
    lines += [
        "",
        f"scikit-learn's predict alone took {report['predict_cpu_s']} CPU-s for all rows: "
        f"{report['two_core_predict_ceiling_rows_per_s']:,} rows/s at most on two cores; "
        f"mlqueue's compiled walk {report['compiled_predict_cpu_s']} CPU-s: "
        f"{report['compiled_two_core_predict_ceiling_rows_per_s']:,} rows/s at most.",
    ]
    return "\n".join(lines) + "\n"


def _same(baseline_csv: Path, other_csv: Path, exact: bool = True) -> bool:
    a = pd.read_csv(baseline_csv)["prediction"].to_numpy()
    b = pd.read_csv(other_csv)["prediction"].to_numpy()
    if len(a) != len(b):
        return False
    return bool(np.array_equal(a, b) if exact else np.allclose(a, b, rtol=1e-12, atol=0))


def _ready(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    main()
