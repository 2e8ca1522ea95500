"""Shadow scoring: a second version scores a copy of rows already answered, and only counts how
far its predictions are from the answers.

The batch that answered sends one `mlqueue.shadow` message per shadow version on the low-priority
queue, after its answers are stored: the answers never wait for, nor depend on, the shadow.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from shared.errors import ServiceError
from shared.tasks import BatchJob, ShadowKwargs
from worker import metrics
from worker.inference import to_matrix
from worker.runtime import Runtime

log = logging.getLogger(__name__)
ShadowSender = Callable[[ShadowKwargs], None]


def shadow_messages(
    jobs: list[BatchJob],
    live: Mapping[str, Any],
    succeeded: Mapping[str, list[float]],
    model: str,
) -> list[ShadowKwargs]:
    """One message per shadow version, with the rows and answers of the jobs that asked for it."""
    by_shadow: dict[str, ShadowKwargs] = {}
    for job in jobs:
        shadow, job_id = job.get("shadow"), str(job["id"])
        if not shadow or job_id not in succeeded:
            continue
        message = by_shadow.setdefault(
            shadow, {"rows": [], "predictions": [], "model": model, "shadow": shadow}
        )
        message["rows"].extend(live[job_id])
        message["predictions"].extend(succeeded[job_id])
    return list(by_shadow.values())


def compare(rt: Runtime, rows: Any, predictions: Any, model: str, shadow: str) -> dict[str, Any]:
    """Score `rows` with `shadow` ("name:version") and count |shadow - answer| per row against
    `model`'s `predictions`. Never raises for a bad shadow: it is counted and logged."""
    name, _, version = model.partition(":")
    shadow_version = shadow.partition(":")[2]
    try:
        info, loaded = rt.models.get(shadow)
        X = to_matrix(rows, loaded.n_features)
        answers = np.asarray(predictions, dtype=np.float64)
        if answers.shape != (len(X),):
            raise ValueError(f"{len(X)} rows but {answers.size} predictions")
        diff = float(np.abs(loaded.predict(X) - answers).sum())
    except (ServiceError, ValueError, TypeError) as exc:
        metrics.observe_shadow_failure(name, version, shadow_version)
        log.warning(
            "shadow scoring failed",
            extra={"model": model, "shadow": shadow, "error": getattr(exc, "message", str(exc))},
        )
        return {"rows": 0, "failed": True}
    metrics.observe_shadow(name, version, info.version, len(X), diff)
    return {"rows": len(X), "abs_difference": diff}
