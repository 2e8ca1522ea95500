"""The gateway's Prometheus metrics: requests, latency, submitted jobs and queue depth.

Metrics live in prometheus-client's default registry (which also carries `process_*` and
`python_*`), so any module can count without plumbing; a gateway forking several processes
switches them to multiprocess mode first (see `gateway.__main__`). Labels take bounded values
only: route templates (never raw paths), model names from the registry, and status codes.
"""

from __future__ import annotations

import functools
import math
import time

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import metrics_dir
from shared.tasks import WORKER_QUEUES

# Celery's Redis transport keeps delivered but unacknowledged messages in this hash.
UNACKED = "unacked"
UNMATCHED = "<unmatched>"
# Methods that get their own label value; anything else (made-up methods) is counted as "other",
# so that a client inventing methods cannot create series without bound.
METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)

REQUESTS = Counter(
    "mlqueue_http_requests",
    "HTTP requests answered, by method, route template and status code.",
    ["method", "route", "status"],
)
LATENCY = Histogram(
    "mlqueue_http_request_duration_seconds",
    "Time from request to the last byte of the response, by method and route template.",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
JOBS_SUBMITTED = Counter(
    "mlqueue_jobs_submitted", "Jobs accepted, by model and kind (json, csv).", ["model", "kind"]
)
ROWS_SUBMITTED = Counter(
    "mlqueue_rows_submitted", "Rows in accepted jobs, by model and kind.", ["model", "kind"]
)
# With several gateway processes, the process that answered the latest scrape has the truth.
QUEUE_DEPTH = Gauge(
    "mlqueue_queue_depth",
    "Messages waiting in a broker queue, read at scrape time (NaN: Redis did not answer).",
    ["queue"],
    multiprocess_mode="mostrecent",
)
UNACKED_MESSAGES = Gauge(
    "mlqueue_queue_unacked",
    "Messages delivered to workers and not yet acknowledged.",
    multiprocess_mode="mostrecent",
)
REDIS_UP = Gauge(
    "mlqueue_redis_up",
    "Whether Redis answered the last scrape (1) or not (0).",
    multiprocess_mode="mostrecent",
)
_multiprocess_registry: CollectorRegistry | None = None


def job_submitted(model: str, kind: str, n_rows: int | None) -> None:
    """Count an accepted job (call once per job, after it was enqueued)."""
    jobs, rows = _submitted(model, kind)
    jobs.inc()
    if n_rows:
        rows.inc(n_rows)


# `labels()` checks and locks on every call; a series, once made, is the same object for good.
# The label values are bounded (see above), so are these caches.
@functools.cache
def _submitted(model: str, kind: str) -> tuple[Counter, Counter]:
    return JOBS_SUBMITTED.labels(model, kind), ROWS_SUBMITTED.labels(model, kind)


@functools.cache
def _answered(method: str, route: str, status: int) -> Counter:
    return REQUESTS.labels(method, route, str(status))


@functools.cache
def _timed(method: str, route: str) -> Histogram:
    return LATENCY.labels(method, route)


async def exposition(redis: Redis) -> bytes:
    """The text exposition of every metric, with queue depth read from Redis just now."""
    try:
        async with redis.pipeline(transaction=False) as pipe:
            for queue in WORKER_QUEUES:  # every priority, and the webhook deliveries
                pipe.llen(queue)
            pipe.hlen(UNACKED)
            *depths, unacked = await pipe.execute()
        for queue, depth in zip(WORKER_QUEUES, depths, strict=True):
            QUEUE_DEPTH.labels(queue).set(depth)
        UNACKED_MESSAGES.set(unacked)
        REDIS_UP.set(1)
    except (RedisError, OSError):
        # A stale depth would look healthy: say "unknown" instead.
        for queue in WORKER_QUEUES:
            QUEUE_DEPTH.labels(queue).set(math.nan)
        UNACKED_MESSAGES.set(math.nan)
        REDIS_UP.set(0)
    return generate_latest(_registry())


def _registry() -> CollectorRegistry:
    # Several gateway processes (MLQUEUE_GATEWAY_WORKERS > 1) count into one multiprocess
    # directory; any of them answers a scrape with the sum.
    global _multiprocess_registry
    if not metrics_dir.enabled():
        return REGISTRY
    if _multiprocess_registry is None:
        _multiprocess_registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(_multiprocess_registry)
    return _multiprocess_registry


class MetricsMiddleware:
    """Counts and times every HTTP request by its route template (`/v1/jobs/{job_id}`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client sees if the app raises before answering

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = _route_template(scope)
            method = scope["method"] if scope["method"] in METHODS else "other"
            _answered(method, route, status).inc()
            _timed(method, route).observe(time.perf_counter() - started)


def _route_template(scope: Scope) -> str:
    # FastAPI's router stores the matched route in the (shared) scope; unknown paths stay
    # one label value so that scanners cannot blow up the series count.
    route = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    if not path and "endpoint" in scope:
        # A Mount (the page's /static files) matched: it records its prefix as root_path.
        path = scope.get("root_path")
    return str(path) if path else UNMATCHED
