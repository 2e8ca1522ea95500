"""`/v2`: the Open Inference Protocol (KServe V2) over REST, thin views over `gateway.v2`.

`probes` (health) needs no key, like `/healthz`; `router` (models) needs one like `/v1`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from gateway import examples_v2 as ex
from gateway import readiness
from gateway.deps import OwnerDep, QueueHasRoom, StateDep
from gateway.v2 import HEADER_LENGTH, InferenceV2
from shared.oip import (
    InferRequest,
    InferResponse,
    ModelMetadata,
    ModelReady,
    ProtocolError,
    ServerLive,
    ServerReady,
)

probes = APIRouter(prefix="/v2/health", tags=["v2"])
router = APIRouter(prefix="/v2/models", tags=["v2"])
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ProtocolError, "description": "Bad tensor: shape, datatype or values."},
    404: {"model": ProtocolError, "description": "No such model or version."},
}
INFER_BODY = ex.request_body(
    "application/json",
    InferRequest.model_json_schema(),
    {"two rows": {"summary": "Two rows, flat", "value": ex.INFER_REQUEST}},
)
METADATA = {200: ex.answer("The model's versions and tensors.", ex.MODEL_METADATA), **ERRORS}
READY = {200: ex.answer("The version can be served.", ex.MODEL_READY), **ERRORS}
INFERRED = {200: ex.answer("One prediction per row, in order.", ex.INFER_RESPONSE), **ERRORS}


async def get_v2(state: StateDep) -> InferenceV2:
    """The V2 service over the registry and the jobs service."""
    return InferenceV2(state.registry, state.jobs)


V2Dep = Annotated[InferenceV2, Depends(get_v2)]


@probes.get("/live", responses={200: ex.answer("Alive.", ex.LIVE)})
async def live() -> ServerLive:
    """The server is live (nothing is checked)."""
    return ServerLive(live=True)


@probes.get(
    "/ready",
    responses={
        200: ex.answer("Ready.", ex.SERVER_READY),
        503: {"model": ServerReady, "description": "Not ready."},
    },
)
async def ready(state: StateDep) -> JSONResponse:
    """Ready as `/readyz`: Redis answers, a worker beat recently, the default model exists."""
    found = await readiness.check(state)
    body = ServerReady(ready=found.ready).model_dump()
    return JSONResponse(body, status_code=200 if found.ready else 503)


@router.get("/{name}", responses=METADATA)
async def model_metadata(name: str, v2: V2Dep) -> ModelMetadata:
    """The model's versions, platform and tensors (its newest version's)."""
    return v2.metadata(name)


@router.get("/{name}/versions/{version}", responses=METADATA)
async def version_metadata(name: str, version: str, v2: V2Dep) -> ModelMetadata:
    """One version's metadata."""
    return v2.metadata(name, version)


@router.get("/{name}/ready", responses=READY)
async def model_ready(name: str, v2: V2Dep) -> ModelReady:
    """200 when the model's newest version can be served; 404 for an unknown model."""
    return v2.ready(name)


@router.get("/{name}/versions/{version}/ready", responses=READY)
async def version_ready(name: str, version: str, v2: V2Dep) -> ModelReady:
    """200 when the version can be served; 404 for an unknown one."""
    return v2.ready(name, version)


@router.post(
    "/{name}/infer",
    response_model=InferResponse,
    responses=INFERRED,
    openapi_extra=INFER_BODY,
    dependencies=[QueueHasRoom],
)
async def infer(name: str, request: Request, v2: V2Dep, owner: OwnerDep) -> Response:
    """Predict one input tensor `[n, n_features]` with the model's newest version and wait."""
    body = await request.body()
    return await inferred(v2, name, None, body, request.headers.get(HEADER_LENGTH), owner)


@router.post(
    "/{name}/versions/{version}/infer",
    response_model=InferResponse,
    responses=INFERRED,
    openapi_extra=INFER_BODY,
    dependencies=[QueueHasRoom],
)
async def infer_version(
    name: str, version: str, request: Request, v2: V2Dep, owner: OwnerDep
) -> Response:
    """Predict with one version of the model and wait."""
    body = await request.body()
    return await inferred(v2, name, version, body, request.headers.get(HEADER_LENGTH), owner)


async def inferred(
    v2: InferenceV2,
    name: str,
    version: str | None,
    body: bytes,
    header_length: str | None,
    owner: str,
) -> Response:
    """`POST .../infer` once its inputs are read (by the routes, or by `gateway.fastlane`)."""
    answer = await v2.infer(name, version, body, header_length, owner)
    return Response(answer, media_type="application/json")
