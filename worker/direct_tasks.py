"""A direct `mlqueue.predict` task as the consumer hands it to a pool process inside a batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DirectTask:
    """What a pool process needs of one message (pickled by the pool, like Celery's own jobs)."""

    id: str
    request: dict[str, Any]  # the message's headers and delivery info: the result's metadata
    kwargs: dict[str, Any]  # `shared.tasks.PredictKwargs`, as sent (anyone may send anything)

    @property
    def rows(self) -> Any:
        return self.kwargs.get("rows")

    @property
    def model(self) -> str:
        return str(self.kwargs.get("model", "default"))

    @property
    def n_rows(self) -> int:
        rows = self.rows
        return len(rows) if isinstance(rows, list) else 0
