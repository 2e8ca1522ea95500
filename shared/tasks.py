"""The public Celery task contract. Names here are stable: other services enqueue by them.

`mlqueue.predict` (queue `mlqueue`, public)
    kwargs: `rows: list[list[float]]`, `model: str = "default"`
    returns: `{"predictions": [float, ...], "model": "<name>", "version": "<v>"}`
    fails with `InvalidInput` (bad rows), `ModelNotFound` or `ModelError`.

`mlqueue.score_chunk` (queue `mlqueue`; internal: sent by the gateway for bulk CSV jobs)
    kwargs: `job_id`, `index`, `first_line`, `rows`, `model` ("name:version"), `layout`, `on_error`
    (see `shared.csvjobs.task_kwargs`); the chunk's bytes travel by reference, in Redis.
"""

from typing import Final

QUEUE: Final = "mlqueue"
PREDICT: Final = "mlqueue.predict"
# Internal: several gateway jobs in one message, `jobs=[{"id": str, "rows": [[...]]}, ...]`,
# `model="name:version"`; each job keeps its own record, result and error in the job store.
PREDICT_BATCH: Final = "mlqueue.predict_batch"
SCORE_CHUNK: Final = "mlqueue.score_chunk"
