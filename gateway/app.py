"""The gateway's app factory: `uvicorn --factory gateway.app:create_app` or `python -m gateway`."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.routing import APIRoute

from gateway import deps, errors, keys, traces
from gateway.fastlane import FastLane
from gateway.limits import BodyLimit
from gateway.metrics import MetricsMiddleware
from gateway.routes import csv_jobs, health, jobs, legacy, metrics, model_upload, models, v2, web
from gateway.state import GatewayState
from shared import gc_tuning, tracing
from shared.logs import configure_logging
from shared.schemas import Problem
from shared.settings import Settings, get_settings


def create_app(settings: Settings | None = None, *, fast_lane: bool = True) -> FastAPI:
    """A configured gateway; its lifespan opens and closes its state (Redis, the publisher).

    `fast_lane=False` leaves every request to FastAPI's routes (tests compare the two).
    """
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings.log_level)
        keys.log_auth_state(settings)
        state = app.state.gateway = GatewayState.create(settings)
        state.start()
        gc_tuning.settle()  # what exists now lives as long as the process: out of the GC's way
        try:
            yield
        finally:
            await state.close()
            tracing.shutdown()  # export the spans still buffered

    app = FastAPI(
        title="mlqueue",
        version="0.1.0",
        summary="Submit prediction jobs, then poll or fetch their results by id.",
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
        # Tracing is ours to configure (gateway.traces); FastAPI's own telemetry would ask
        # OpenTelemetry for its providers on every request (1.6 % of the gateway's CPU).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    errors.install(app)
    # Every router but the probes and the web page needs an API key when keys are configured;
    # /metrics too, unless MLQUEUE_METRICS_PUBLIC.
    keyed = (
        jobs.router,
        csv_jobs.router,
        models.router,
        model_upload.router,
        legacy.router,
        v2.router,
    )
    for router in keyed:
        app.include_router(router, dependencies=[Depends(deps.get_owner)], responses=UNAUTHORIZED)
    app.include_router(metrics.router, dependencies=[Depends(deps.metrics_access)])
    for router in (health.router, v2.probes, web.router):
        app.include_router(router)
    app.mount("/static", web.static_files(), name="static")
    if fast_lane:  # inside the body limits and the metrics, like the routes it stands in for
        app.add_middleware(FastLane)
    app.add_middleware(
        BodyLimit,
        default=settings.max_body_bytes,
        per_path={"/v1/jobs/csv": settings.max_upload_bytes},
        # The model file plus room for the multipart framing; the file alone is counted exactly.
        per_pattern=[(re.compile(model_upload.UPLOAD_PATH), settings.max_model_bytes + 65536)],
    )
    app.add_middleware(MetricsMiddleware)  # outermost, so that it also counts the 413s
    traces.instrument(app)  # when OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is set (docs/tracing.md)
    return app


UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "API keys are configured and none valid was sent."}
}


def _operation_id(route: APIRoute) -> str:
    # Stable, readable operation ids for generated clients: "jobs-submit_job".
    return f"{route.tags[0]}-{route.name}" if route.tags else route.name
