"""`/metrics`: the gateway's Prometheus text exposition (workers expose their own port)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from gateway import metrics
from gateway.deps import StateDep

router = APIRouter(tags=["metrics"])

EXAMPLE = """\
# HELP mlqueue_queue_depth Messages waiting in a broker queue, read at scrape time.
# TYPE mlqueue_queue_depth gauge
mlqueue_queue_depth{queue="mlqueue"} 3.0
# HELP mlqueue_jobs_submitted_total Jobs accepted, by model and kind (json, csv).
# TYPE mlqueue_jobs_submitted_total counter
mlqueue_jobs_submitted_total{kind="json",model="demo"} 42.0
"""


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text exposition format.",
            "content": {"text/plain": {"example": EXAMPLE}},
        }
    },
)
async def get_metrics(state: StateDep) -> Response:
    """Request counts and latencies by route, jobs submitted by model, and queue depth."""
    body = await metrics.exposition(state.redis)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
