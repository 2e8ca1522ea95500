"""`/v1/jobs`: submit a JSON job, read its status, fetch or wait for its result, cancel it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Response
from fastapi.responses import JSONResponse, StreamingResponse

from gateway import examples as ex
from gateway.deps import JobsDep, OwnerDep, QueueHasRoom
from gateway.jobs import CsvResult
from shared.schemas import JobAccepted, JobResult, JobView, PredictRequest, Problem

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

JobId = Annotated[str, Path(min_length=1, max_length=200, description="The id returned at submit.")]
PROBLEMS: dict[int | str, dict[str, Any]] = {
    404: {
        "model": Problem,
        **ex.answer("No such job (or not yours).", ex.problem(404, "JobNotFound", "no job x")),
    },
    422: {
        "model": Problem,
        **ex.answer(
            "Invalid rows, naming row and column.",
            ex.problem(422, "InvalidInput", "row 0 has 3 features, expected 10"),
        ),
    },
    503: {
        "model": Problem,
        **ex.answer(
            "Redis or the broker is unavailable (see Retry-After).",
            ex.problem(503, "QueueUnavailable", "the job queue is unavailable; retry shortly"),
        ),
    },
}


@router.post(
    "",
    status_code=202,
    responses={
        202: ex.answer("Accepted: poll `Location`.", ex.ACCEPTED),
        **{k: PROBLEMS[k] for k in (422, 503)},
    },
    dependencies=[QueueHasRoom],
)
async def submit_job(
    body: Annotated[PredictRequest, Body(openapi_examples=ex.SUBMIT_BODIES)],
    jobs: JobsDep,
    owner: OwnerDep,
    response: Response,
) -> JobAccepted:
    """Enqueue rows for prediction; poll `Location` or fetch `Location/result`."""
    accepted = await jobs.submit(body.data, body.model, owner)
    response.headers["Location"] = accepted.location
    return accepted


@router.get(
    "/{job_id}",
    responses={
        200: ex.answers(
            "The job.",
            {"succeeded": ex.VIEW_SUCCEEDED, "running": ex.VIEW_RUNNING, "csv": ex.VIEW_CSV},
        ),
        **{k: PROBLEMS[k] for k in (404, 503)},
    },
)
async def get_job(job_id: JobId, jobs: JobsDep, owner: OwnerDep) -> JobView:
    """The job's status, timestamps, model, row count, progress and error."""
    return await jobs.get(job_id, owner)


@router.get(
    "/{job_id}/result",
    response_model=JobResult,
    responses={
        200: {
            "description": "The predictions: JSON, or `text/csv` for a CSV job.",
            "content": {
                "application/json": {"example": ex.RESULT},
                "text/csv": {"example": ex.CSV_RESULT},
            },
        },
        202: {"model": JobView, **ex.answer("Not finished yet: the job.", ex.VIEW_RUNNING)},
        409: {"model": Problem, "description": "The job failed or was cancelled: its error."},
        **{k: PROBLEMS[k] for k in (404, 503)},
    },
)
async def get_result(
    job_id: JobId,
    jobs: JobsDep,
    owner: OwnerDep,
    wait: Annotated[float, Query(ge=0, le=30, description="Seconds to long-poll for the end.")] = 0,
) -> JobResult | JSONResponse | StreamingResponse:
    """The predictions, one per input row in order (for a CSV job a `text/csv` stream: the id
    column when one was named, then `prediction`); `?wait=S` returns as soon as the job ends."""
    answer = await jobs.result(job_id, owner, wait)
    if isinstance(answer, CsvResult):
        return StreamingResponse(
            answer.body,
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{job_id}.csv"'},
        )
    if isinstance(answer, JobView):  # not finished yet
        return JSONResponse(
            answer.model_dump(mode="json"),
            status_code=202,
            headers={"Retry-After": "1", "Location": f"/v1/jobs/{job_id}"},
        )
    return answer


@router.delete(
    "/{job_id}",
    responses={
        200: ex.answer("The cancelled job.", ex.VIEW_CANCELLED),
        409: {"model": Problem, "description": "The job has already finished."},
        404: PROBLEMS[404],
    },
)
async def cancel_job(job_id: JobId, jobs: JobsDep, owner: OwnerDep) -> JobView:
    """Cancel a queued or running job: it will not produce a result."""
    return await jobs.cancel(job_id, owner)
