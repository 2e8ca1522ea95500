"""The Celery task of bulk CSV jobs: a thin wrapper around `worker.csv_chunks.score_chunk`."""

from __future__ import annotations

from typing import Unpack

from shared.tasks import SCORE_CHUNK, ScoreChunkKwargs
from worker import traces
from worker.celery_app import app
from worker.csv_chunks import score_chunk
from worker.requeue import requeue_if_redis_is_away
from worker.runtime import runtime


# No result is kept: the job store holds the outcome. A Redis blip hands the message back
# (scoring is idempotent per chunk), rather than leaving the job waiting for a chunk that never
# lands; a Celery retry would need the broker that just went away.
@app.task(name=SCORE_CHUNK, ignore_result=True)
def score(**message: Unpack[ScoreChunkKwargs]) -> str:
    """Score one stored chunk of a CSV job (see `shared.tasks`)."""
    with requeue_if_redis_is_away(), traces.chunk(message):
        return score_chunk(runtime(), **message)
