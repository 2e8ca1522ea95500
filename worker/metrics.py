"""The worker's Prometheus metrics, added up over every prefork child by the main process.

Children write their samples to files in `PROMETHEUS_MULTIPROC_DIR` (prometheus-client's
multiprocess mode); the main process serves the sum on `MLQUEUE_WORKER_METRICS_PORT`. `setup`
runs in the main process before the pool forks, so children inherit the directory and the metric
objects. The `observe_*` functions are no-ops until then (unit tests, `celery call`).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
)

from shared import metrics_dir
from shared.settings import Settings

log = logging.getLogger(__name__)

SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
ROWS = (1, 10, 100, 1_000, 10_000, 50_000, 100_000, 1_000_000)


@dataclass(frozen=True)
class WorkerMetrics:
    """The worker's metric objects (built once `PROMETHEUS_MULTIPROC_DIR` is set)."""

    jobs: Counter
    rows: Counter
    job_seconds: Histogram
    failures: Counter
    predict_seconds: Histogram
    batch_rows: Histogram
    model_load_seconds: Histogram
    model_evictions: Counter
    models_loaded: Gauge
    shadow_rows: Counter
    shadow_abs_difference: Counter
    shadow_failures: Counter

    @classmethod
    def create(cls) -> WorkerMetrics:
        """New metric objects, registered nowhere: the multiprocess collector reads the files."""
        by_outcome = ["model", "version", "outcome"]
        return cls(
            jobs=Counter(
                "mlqueue_worker_jobs", "Jobs ended, by outcome.", by_outcome, registry=None
            ),
            rows=Counter("mlqueue_worker_rows", "Rows of jobs ended.", by_outcome, registry=None),
            job_seconds=Histogram(
                "mlqueue_worker_job_duration_seconds",
                "Task run time, from start to end (store writes included).",
                ["model", "outcome"],
                buckets=SECONDS,
                registry=None,
            ),
            failures=Counter(
                "mlqueue_worker_failures",
                "Failed jobs, by error type.",
                ["model", "error_type"],
                registry=None,
            ),
            predict_seconds=Histogram(
                "mlqueue_worker_predict_duration_seconds",
                "Time spent in one model.predict call.",
                ["model", "version"],
                buckets=SECONDS,
                registry=None,
            ),
            batch_rows=Histogram(
                "mlqueue_worker_batch_rows",
                "Rows passed to one model.predict call.",
                ["model"],
                buckets=ROWS,
                registry=None,
            ),
            model_load_seconds=Histogram(
                "mlqueue_worker_model_load_seconds",
                "Time to load (verify and unpickle) one model version in one process.",
                ["model", "version"],
                buckets=SECONDS,
                registry=None,
            ),
            model_evictions=Counter(
                "mlqueue_worker_model_evictions",
                "Model versions dropped from a process's cache (least recently used first).",
                ["model", "version"],
                registry=None,
            ),
            models_loaded=Gauge(
                "mlqueue_worker_models_loaded",
                "Model versions loaded, summed over the live worker processes.",
                registry=None,
                multiprocess_mode="livesum",
            ),
            shadow_rows=Counter(
                "mlqueue_worker_shadow_rows",
                "Rows scored by a shadow version and compared with the answer's version.",
                ["model", "version", "shadow_version"],
                registry=None,
            ),
            shadow_abs_difference=Counter(
                "mlqueue_worker_shadow_abs_difference",
                "Sum of |shadow - answer| over the compared rows: divided by "
                "mlqueue_worker_shadow_rows_total, the mean absolute difference.",
                ["model", "version", "shadow_version"],
                registry=None,
            ),
            shadow_failures=Counter(
                "mlqueue_worker_shadow_failures",
                "Shadow scorings that failed (the answers were not affected).",
                ["model", "version", "shadow_version"],
                registry=None,
            ),
        )


_metrics: WorkerMetrics | None = None
_server: WSGIServer | None = None
_owned_dir: Path | None = None


def setup(settings: Settings) -> Path:
    """Point prometheus-client at an empty multiprocess directory and build the metrics."""
    global _metrics, _owned_dir
    path = metrics_dir.enable(settings.metrics_dir, prefix="mlqueue-worker-metrics-")
    if settings.metrics_dir is None:
        _owned_dir = path
    _metrics = WorkerMetrics.create()
    return path


def serve(settings: Settings) -> int | None:
    """Serve the children's summed metrics over HTTP from this (main) process; returns the port."""
    global _server
    if not settings.worker_metrics_port or _metrics is None:
        return None
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    try:
        _server, _ = start_http_server(
            settings.worker_metrics_port, settings.worker_metrics_host, registry=registry
        )
    except OSError as exc:
        # Another worker on this host has the port: keep working, unscraped, and say so.
        log.error(
            "worker metrics endpoint not started",
            extra={"port": settings.worker_metrics_port, "error": str(exc)},
        )
        return None
    port = int(_server.server_port)
    log.info("worker metrics endpoint started", extra={"port": port})
    return port


def process_exited(pid: int) -> None:
    """Drop a dead child's live gauges (its counters and histograms stay in the sums)."""
    if _metrics is not None:
        multiprocess.mark_process_dead(pid)


def shutdown() -> None:
    """Stop the endpoint and remove the directory this worker created."""
    if _server is not None:
        _server.shutdown()
    if _owned_dir is not None:
        shutil.rmtree(_owned_dir, ignore_errors=True)


def observe_job(
    model: str,
    version: str,
    outcome: str,
    n_rows: int,
    seconds: float | None,
    error_type: str = "",
) -> None:
    """Count one ended job (`outcome`: succeeded or failed); `seconds` None when unknown."""
    if _metrics is None:
        return
    _metrics.jobs.labels(model, version, outcome).inc()
    observe_rows(model, version, outcome, n_rows)
    if seconds is not None:
        _metrics.job_seconds.labels(model, outcome).observe(seconds)
    if error_type:
        observe_failure(model, error_type)


def observe_rows(model: str, version: str, outcome: str, n_rows: int) -> None:
    """Count rows as they are scored (a CSV job's chunk at a time) or fail."""
    if _metrics is not None and n_rows:
        _metrics.rows.labels(model, version, outcome).inc(n_rows)


def observe_failure(model: str, error_type: str) -> None:
    """Count one failure (of a job, or of a whole batch message)."""
    if _metrics is not None:
        _metrics.failures.labels(model, error_type).inc()


def observe_predict(model: str, version: str, n_rows: int, seconds: float) -> None:
    """Record one `model.predict` call over `n_rows` rows (once per call, batched or not)."""
    if _metrics is None:
        return
    _metrics.predict_seconds.labels(model, version).observe(seconds)
    _metrics.batch_rows.labels(model).observe(n_rows)


def observe_model_load(model: str, version: str, seconds: float) -> None:
    """Record the load time of one model version in this process."""
    if _metrics is not None:
        _metrics.model_load_seconds.labels(model, version).observe(seconds)


def observe_model_eviction(model: str, version: str) -> None:
    """Count one version dropped from this process's model cache."""
    if _metrics is not None:
        _metrics.model_evictions.labels(model, version).inc()


def set_models_loaded(count: int) -> None:
    """How many versions this process holds now."""
    if _metrics is not None:
        _metrics.models_loaded.set(count)


def observe_shadow(model: str, version: str, shadow: str, n_rows: int, abs_diff: float) -> None:
    """Count `n_rows` rows compared between `model:version` and `model:shadow`."""
    if _metrics is not None:
        _metrics.shadow_rows.labels(model, version, shadow).inc(n_rows)
        _metrics.shadow_abs_difference.labels(model, version, shadow).inc(abs_diff)


def observe_shadow_failure(model: str, version: str, shadow: str) -> None:
    """Count one shadow scoring that failed."""
    if _metrics is not None:
        _metrics.shadow_failures.labels(model, version, shadow).inc()
