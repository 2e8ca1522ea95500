"""`POST /v1/models/{name}/versions`: upload a new version of a model (admin keys only)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request

from gateway import examples_v2 as ex
from gateway.deps import AdminDep, StateDep
from gateway.model_upload import ModelUploads
from shared.schemas import ModelInfo, Problem

router = APIRouter(prefix="/v1/models", tags=["models"])
UPLOAD_PATH = r"/v1/models/[^/]+/versions"  # the body limit's pattern (gateway.app)
RESPONSES: dict[int | str, dict[str, Any]] = {
    201: ex.answer("Installed: the new version's manifest, written by the server.", ex.UPLOADED),
    403: {"model": Problem, "description": "The key is not an admin key."},
    413: {"model": Problem, "description": "The file exceeds `MLQUEUE_MAX_MODEL_BYTES`."},
    415: {"model": Problem, "description": "Not a skops file (or a refused joblib/pickle)."},
    422: {"model": Problem, "description": "Untrusted types, wrong n_features, failed smoke test."},
    503: {"model": Problem, "description": "No worker vetted the file in time."},
}
UPLOAD_BODY = ex.request_body(
    "multipart/form-data",
    {
        "type": "object",
        "required": ["file"],
        "properties": {"file": {"type": "string", "format": "binary"}},
    },
    {"skops": ex.UPLOAD_FORM},
)


async def get_uploads(state: StateDep) -> ModelUploads:
    """The upload service over the state's Redis and publisher."""
    wait = state.settings.sync_timeout
    return ModelUploads(state.settings, state.registry, state.redis, state.jobs.publisher, wait)


@router.post("/{name}/versions", status_code=201, responses=RESPONSES, openapi_extra=UPLOAD_BODY)
async def upload_version(
    name: Annotated[str, Path(max_length=200, description="The model's name.")],
    request: Request,
    uploads: Annotated[ModelUploads, Depends(get_uploads)],
    _admin: AdminDep,
) -> ModelInfo:
    """Upload a model file in the skops format (field `file`) as the next version of `name`.
    A worker loads it with trusted types only, checks its features against the existing
    versions, predicts two rows as a smoke test and writes the manifest; the version is visible
    from the 201 on."""
    return await uploads.upload(name, request.headers.get("content-type", ""), request.stream())
