"""The article's API, kept as a synchronous façade over the queue for its existing clients."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, File, UploadFile

from gateway import examples as ex
from gateway.deps import JobQueueDep, OwnerDep, QueueHasRoom, SettingsDep
from gateway.routes.jobs import PROBLEMS
from shared.csvformat import parse_small
from shared.errors import InvalidInput, JobConflict, QueueUnavailable
from shared.schemas import JobStatus, LegacyPredictRequest, LegacyPredictResponse

router = APIRouter(tags=["legacy"])
RESPONSES: dict[int | str, dict[str, Any]] = {
    200: ex.answer("One prediction per row, in order.", ex.LEGACY),
    **{k: PROBLEMS[k] for k in (422, 503)},
}
CSV_BODY = {
    "requestBody": {
        "content": {"multipart/form-data": {"examples": {"header": ex.CSV_FORM}}},
    }
}


@router.post("/predict", responses=RESPONSES, dependencies=[QueueHasRoom])
async def predict(
    body: Annotated[LegacyPredictRequest, Body(openapi_examples=ex.LEGACY_BODIES)],
    queue: JobQueueDep,
    owner: OwnerDep,
    settings: SettingsDep,
) -> LegacyPredictResponse:
    """Predict rows with the default model and wait for the answer (bounded)."""
    return await _run(queue, body.data, owner, settings.sync_timeout)


@router.post(
    "/predict_csv", responses=RESPONSES, openapi_extra=CSV_BODY, dependencies=[QueueHasRoom]
)
async def predict_csv(
    csv_file: Annotated[UploadFile, File(description="A CSV of feature rows (header optional).")],
    queue: JobQueueDep,
    owner: OwnerDep,
    settings: SettingsDep,
) -> LegacyPredictResponse:
    """Predict every row of a small CSV file with the default model and wait for the answer."""
    info = queue.registry.resolve("default")
    rows, _ = parse_small(await csv_file.read(), info.feature_names, settings.max_rows_per_job)
    return await _run(queue, rows, owner, settings.sync_timeout)


async def _run(
    queue: JobQueueDep, rows: list[list[float]], owner: str, timeout: float
) -> LegacyPredictResponse:
    accepted = await queue.submit(rows, "default", owner)
    view, predictions = await queue.wait(accepted.job_id, owner, timeout)
    if view.status is JobStatus.SUCCEEDED:
        return LegacyPredictResponse(data=predictions or [])
    if view.status is JobStatus.FAILED and view.error and view.error.type == "InvalidInput":
        raise InvalidInput(view.error.message, job_id=accepted.job_id)
    if view.status.finished:
        raise JobConflict(f"job {accepted.job_id} {view.status.value}", job_id=accepted.job_id)
    raise QueueUnavailable(
        f"no result within {timeout:g} s; poll /v1/jobs/{accepted.job_id}/result",
        job_id=accepted.job_id,
    )
