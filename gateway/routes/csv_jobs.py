"""`/v1/jobs/csv`: upload a CSV to score in chunks; `/v1/jobs/{id}/errors`: its bad lines.

The result (`GET /v1/jobs/{id}/result`, `text/csv`), status and cancel are the jobs routes'.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query, Request, Response

from gateway import examples as ex
from gateway.csv_store import CsvStore
from gateway.csv_upload import CsvUpload
from gateway.deps import JobQueueDep, OwnerDep, QueueHasRoom
from gateway.routes.jobs import PROBLEMS, JobId
from shared import jobstore
from shared.schemas import MODEL_PATTERN, CsvErrors, JobAccepted, LineError, Problem

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
    openapi_extra=UPLOAD_BODY,
    responses={
        202: ex.answer("Accepted: poll `Location` for progress.", ex.CSV_ACCEPTED),
        413: {"model": Problem, "description": "The upload exceeds MLQUEUE_MAX_UPLOAD_BYTES."},
        415: {"model": Problem, "description": "The body is not multipart/form-data."},
        **{k: PROBLEMS[k] for k in (422, 503)},
    },
    dependencies=[QueueHasRoom],
)
async def submit_csv(
    request: Request,
    queue: JobQueueDep,
    owner: OwnerDep,
    response: Response,
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
) -> JobAccepted:
    """Stream a CSV file in and score it in chunks; form fields (sent before `file`) or query
    parameters set the options. Header errors are a 422 at once; bad data lines fail the job
    with their line and column (or are skipped and reported with `on_error=skip`)."""
    options = {
        "model": model or "",
        "id_column": id_column or "",
        "on_error": on_error or "",
        "ignore_extra": "" if ignore_extra is None else str(ignore_extra),
    }
    upload = CsvUpload(queue.settings, queue.registry, queue.store, queue.celery, owner, options)
    accepted = await upload.run(request.headers.get("content-type", ""), request.stream())
    response.headers["Location"] = accepted.location
    return accepted


@router.get(
    "/{job_id}/errors",
    responses={
        200: ex.answer("The bad lines, with line and column.", ex.CSV_ERRORS),
        **{k: PROBLEMS[k] for k in (404, 503)},
    },
)
async def get_errors(job_id: JobId, queue: JobQueueDep, owner: OwnerDep) -> CsvErrors:
    """The bad lines of a CSV job: those skipped (on_error=skip), or those that failed it."""
    view = await queue.store.get(job_id, owner)
    redis = queue.store.redis
    failed_with, sent = await redis.hmget(jobstore.job_key(job_id), ["errors", "chunks_sent"])
    if failed_with:
        listed = orjson.loads(failed_with)
    else:
        listed = await CsvStore(redis, queue.settings.result_ttl).errors(job_id, int(sent or 0))
    return CsvErrors(
        job_id=job_id,
        status=view.status,
        rows_skipped=view.progress.rows_skipped if view.progress else 0,
        errors=[LineError.model_validate(e) for e in listed],
    )
