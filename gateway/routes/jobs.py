"""`/v1/jobs`: submit a JSON job, read its status, fetch or wait for its result, cancel it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Header, Path, Query, Response
from fastapi.responses import JSONResponse, StreamingResponse
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.background import BackgroundTask

from gateway import examples as ex
from gateway.deps import JobsDep, OwnerDep, QueueHasRoom, StateDep
from gateway.idempotency import KEY_PATTERN
from gateway.jobs import CsvResult, Jobs, Submitted
from shared.schemas import (
    JobAccepted,
    JobPage,
    JobResult,
    JobStatus,
    JobView,
    PredictRequest,
    Problem,
)

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=KEY_PATTERN,
        description="1-255 visible ASCII characters: a retry with the same key and body gets "
        "the original answer (with `Idempotent-Replayed: true`) instead of a second job.",
    ),
]
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
    429: {
        "model": Problem,
        "description": "The API key is over its rate limit: see `Retry-After`, `RateLimit` and "
        "`RateLimit-Policy`.",
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
    response_model=JobAccepted,
    responses={
        202: ex.answer("Accepted: poll `Location`.", ex.ACCEPTED),
        409: {"model": Problem, "description": "A request with this Idempotency-Key is running."},
        **{k: PROBLEMS[k] for k in (422, 429, 503)},
    },
    dependencies=[QueueHasRoom],
)
async def submit_job(
    body: Annotated[PredictRequest, Body(openapi_examples=ex.SUBMIT_BODIES)],
    jobs: JobsDep,
    owner: OwnerDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Enqueue rows for prediction; poll `Location` or fetch `Location/result`."""
    return await submit(jobs, body, owner, idempotency_key)


async def submit(jobs: Jobs, body: PredictRequest, owner: str, key: str | None) -> Response:
    """`POST /v1/jobs` once its inputs are read (by the route, or by `gateway.fastlane`)."""
    submitted = await jobs.submit_once(
        body.data, body.model, owner, key, body.priority, body.callback_url
    )
    return accepted(submitted)


def accepted(submitted: Submitted) -> Response:
    """The 202 with the `JobAccepted` body, `Location` (and `Idempotent-Replayed` for a
    replay)."""
    headers = {"Location": submitted.accepted.location}
    if submitted.replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(
        submitted.accepted.model_dump_json(), 202, headers, media_type="application/json"
    )


@router.get(
    "",
    responses={
        200: ex.answer("A page of your jobs; follow `next_cursor`.", ex.PAGE),
        **{k: PROBLEMS[k] for k in (422, 503)},
    },
)
async def list_jobs(
    jobs: JobsDep,
    owner: OwnerDep,
    status: Annotated[JobStatus | None, Query(description="Only jobs in this state.")] = None,
    kind: Annotated[Literal["json", "csv"] | None, Query(description="Only this kind.")] = None,
    limit: Annotated[int, Query(ge=1, le=100, description="Jobs per page.")] = 20,
    cursor: Annotated[
        str | None, Query(max_length=400, description="`next_cursor` of the previous page.")
    ] = None,
) -> JobPage:
    """Your jobs, newest first, a page at a time: follow `next_cursor` until it is null."""
    return await jobs.list_jobs(owner, limit, cursor, status, kind)


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
) -> Response:
    """The predictions, one per input row in order (for a CSV job a `text/csv` stream: the id
    column when one was named, then `prediction`); `?wait=S` returns as soon as the job ends."""
    return await result(jobs, job_id, owner, wait)


async def result(jobs: Jobs, job_id: str, owner: str, wait: float) -> Response:
    """`GET /v1/jobs/{job_id}/result` once its inputs are read (by the route, or by
    `gateway.fastlane`)."""
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
    return Response(answer.body(), media_type="application/json")


@router.get(
    "/{job_id}/events",
    response_class=EventSourceResponse,
    responses={
        200: {
            "description": "`text/event-stream`: one `status` event (the job view as JSON) per "
            "change, ending after the final state; comment lines as heartbeats.",
            "content": {"text/event-stream": {"example": ex.EVENTS}},
        },
        429: {"model": Problem, "description": "Too many open streams for this API key."},
        **{k: PROBLEMS[k] for k in (404, 503)},
    },
)
async def job_events(
    job_id: JobId,
    jobs: JobsDep,
    owner: OwnerDep,
    state: StateDep,
    last_event_id: Annotated[
        str | None,
        Header(alias="Last-Event-ID", max_length=64, description="Resume after this event."),
    ] = None,
) -> EventSourceResponse:
    """Server-Sent Events: the job's status (with progress) each time it changes, until it
    has finished."""
    events, slot = await jobs.open_events(job_id, owner, last_event_id)

    async def frames() -> AsyncIterator[ServerSentEvent]:
        async for event in events:
            yield ServerSentEvent(data=event.data, event="status", id=event.id)

    return EventSourceResponse(
        frames(),
        ping=state.settings.events_heartbeat_seconds,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        background=BackgroundTask(slot.release),  # also when the stream never started
    )


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


@router.post(
    "/{job_id}/retry",
    status_code=202,
    response_model=JobAccepted,
    responses={
        202: ex.answer("Accepted: the new job (its view has `retry_of`).", ex.ACCEPTED),
        409: {"model": Problem, "description": "The job is not failed or cancelled, or is CSV."},
        **{k: PROBLEMS[k] for k in (404, 422, 429, 503)},
    },
    dependencies=[QueueHasRoom],
)
async def retry_job(job_id: JobId, jobs: JobsDep, owner: OwnerDep) -> Response:
    """Run a failed or cancelled JSON job again, with the same rows and model version, as a
    new job."""
    return accepted(Submitted(await jobs.retry(job_id, owner)))
