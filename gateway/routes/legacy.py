"""The article's API, kept as a synchronous façade over the queue for its existing clients."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, File, Response, UploadFile

from gateway import examples as ex
from gateway.deps import JobsDep, OwnerDep, QueueHasRoom
from gateway.jobs import Jobs
from gateway.routes.jobs import PROBLEMS
from shared.schemas import LegacyPredictRequest, LegacyPredictResponse

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


def predictions(data: bytes) -> Response:
    """`LegacyPredictResponse` around predictions kept as JSON (see `gateway.jobs.Predictions`)."""
    return Response(b'{"data":' + data + b"}", media_type="application/json")


@router.post(
    "/predict",
    response_model=LegacyPredictResponse,
    responses=RESPONSES,
    dependencies=[QueueHasRoom],
)
async def predict(
    body: Annotated[LegacyPredictRequest, Body(openapi_examples=ex.LEGACY_BODIES)],
    jobs: JobsDep,
    owner: OwnerDep,
) -> Response:
    """Predict rows with the default model and wait for the answer (bounded)."""
    return await predict_rows(jobs, body, owner)


async def predict_rows(jobs: Jobs, body: LegacyPredictRequest, owner: str) -> Response:
    """`POST /predict` once its inputs are read (by the route, or by `gateway.fastlane`)."""
    return predictions(await jobs.predict_now_json(body.data, owner))


@router.post(
    "/predict_csv",
    response_model=LegacyPredictResponse,
    responses=RESPONSES,
    openapi_extra=CSV_BODY,
    dependencies=[QueueHasRoom],
)
async def predict_csv(
    csv_file: Annotated[UploadFile, File(description="A CSV of feature rows (header optional).")],
    jobs: JobsDep,
    owner: OwnerDep,
) -> Response:
    """Predict every row of a small CSV file with the default model and wait for the answer."""
    return predictions(await jobs.predict_csv_now(await csv_file.read(), owner))
