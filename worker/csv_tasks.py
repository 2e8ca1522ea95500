"""The Celery task of bulk CSV jobs: a thin wrapper around `worker.csv_chunks.score_chunk`."""

from __future__ import annotations

from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.tasks import SCORE_CHUNK
from worker.celery_app import app
from worker.csv_chunks import score_chunk
from worker.runtime import runtime


# No result is kept: the job store holds the outcome. A Redis blip is retried (scoring is
# idempotent per chunk), rather than leaving the job waiting for a chunk that never lands.
@app.task(
    name=SCORE_CHUNK,
    ignore_result=True,
    autoretry_for=(RedisConnectionError, RedisTimeoutError),
    retry_backoff=True,
    max_retries=5,
)
def score(job_id: str, index: int, **kwargs: Any) -> str:
    """Score one stored chunk of a CSV job (see `shared.tasks`)."""
    return score_chunk(runtime(), job_id, index, **kwargs)
