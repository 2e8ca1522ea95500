"""The public Celery task contract. Names here are stable: other services enqueue by them.

`mlqueue.predict` (queue `mlqueue`)
    kwargs: `rows: list[list[float]]`, `model: str = "default"`
    returns: `{"predictions": [float, ...], "model": "<name>", "version": "<v>"}`
    fails with `InvalidInput` (bad rows), `ModelNotFound` or `ModelError`.
"""

from typing import Final

QUEUE: Final = "mlqueue"
PREDICT: Final = "mlqueue.predict"
