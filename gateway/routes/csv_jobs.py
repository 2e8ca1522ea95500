"""`/v1/jobs/csv`: upload a CSV to score in chunks; `/v1/jobs/{id}/errors`: its bad lines.

The result (`GET /v1/jobs/{id}/result`, `text/csv`), status and cancel are the jobs routes'.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response

from gateway import examples as ex
from gateway.deps import JobsDep, OwnerDep, QueueHasRoom
from gateway.routes.jobs import PROBLEMS, IdempotencyKey, JobId, accepted
from shared.schemas import MODEL_PATTERN, CsvErrors, JobAccepted, Problem

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "model": {"type": "string", "description": "Sent before `file`."},
                        "id_column": {"type": "string", "description": "Sent before `file`."},
                        "on_error": {"type": "string", "enum": ["fail", "skip"]},
                        "ignore_extra": {"type": "boolean"},
                        "priority": {"type": "string", "enum": ["high", "normal", "low"]},
                        "callback_url": {"type": "string", "description": "Sent before `file`."},
                        "file": {"type": "string", "format": "binary"},
                    },
                },
                "encoding": {"file": {"contentType": "text/csv"}},
                "examples": {"with-ids": ex.CSV_UPLOAD},
            }
        },
    }
}


@router.post(
    "/csv",
    status_code=202,
    response_model=JobAccepted,
    openapi_extra=UPLOAD_BODY,
    responses={
        202: ex.answer("Accepted: poll `Location` for progress.", ex.CSV_ACCEPTED),
        413: {"model": Problem, "description": "The upload exceeds MLQUEUE_MAX_UPLOAD_BYTES."},
        409: {"model": Problem, "description": "The same Idempotency-Key is uploading now."},
        415: {"model": Problem, "description": "The body is not multipart/form-data."},
        **{k: PROBLEMS[k] for k in (422, 429, 503)},
    },
    dependencies=[QueueHasRoom],
)
async def submit_csv(
    request: Request,
    jobs: JobsDep,
    owner: OwnerDep,
    model: Annotated[
        str | None,
        Query(
            description='A model name, "name:version" or "default".',
            max_length=200,
            pattern=MODEL_PATTERN,
        ),
    ] = None,
    id_column: Annotated[
        str | None, Query(description="Column passed through to the result.")
    ] = None,
    on_error: Annotated[Literal["fail", "skip"] | None, Query(description="Bad lines.")] = None,
    ignore_extra: Annotated[bool | None, Query(description="Allow unknown columns.")] = None,
    priority: Annotated[
        Literal["high", "normal", "low"] | None, Query(description="Queue priority.")
    ] = None,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Stream a CSV file in and score it in chunks; form fields (sent before `file`) or query
    parameters set the options. Header errors are a 422 at once; bad data lines fail the job
    with their line and column (or are skipped and reported with `on_error=skip`)."""
    given = {"model": model, "id_column": id_column, "on_error": on_error, "priority": priority}
    query = {k: v for k, v in given.items() if v is not None}
    if ignore_extra is not None:
        query["ignore_extra"] = str(ignore_extra)
    content_type = request.headers.get("content-type", "")
    submitted = await jobs.submit_csv(content_type, request.stream(), owner, query, idempotency_key)
    return accepted(submitted)


@router.get(
    "/{job_id}/errors",
    responses={
        200: ex.answer("The bad lines, with line and column.", ex.CSV_ERRORS),
        **{k: PROBLEMS[k] for k in (404, 503)},
    },
)
async def get_errors(
    job_id: JobId,
    jobs: JobsDep,
    owner: OwnerDep,
    limit: Annotated[int, Query(ge=1, le=1000, description="Bad lines per page.")] = 1000,
    cursor: Annotated[
        str | None, Query(max_length=24, description="`next_cursor` of the page before.")
    ] = None,
) -> CsvErrors:
    """The bad lines of a CSV job, a page at a time: those skipped (on_error=skip), or those
    that failed it. Follow `next_cursor` until it is null."""
    return await jobs.errors(job_id, owner, cursor, limit)
