"""The Open Inference Protocol (KServe V2) over REST, as a service over the registry and `Jobs`.

Inference is synchronous over the queue, like `/predict`: each request becomes a job (batched
with others by the micro-batcher, recorded in Redis, redelivered if a worker dies) and waits for
its answer within `sync_timeout`. Routes are in `gateway.routes.v2`; errors get the protocol's
`{"error": ...}` body from `gateway.errors`.
"""

from __future__ import annotations

import orjson
from pydantic import ValidationError

from gateway.jobs import Jobs
from gateway.tensors import rows_of
from shared.errors import InvalidInput, MalformedRequest, ModelNotFound
from shared.oip import (
    INPUT_NAME,
    OUTPUT_NAME,
    InferRequest,
    ModelMetadata,
    ModelReady,
    TensorMetadata,
)
from shared.registry import Registry
from shared.schemas import ModelInfo

HEADER_LENGTH = "inference-header-content-length"  # the binary tensor extension's header


class InferenceV2:
    """Metadata, readiness and inference of the registry's models, by the V2 protocol."""

    def __init__(self, registry: Registry, jobs: Jobs) -> None:
        self.registry = registry
        self.jobs = jobs

    def resolve(self, name: str, version: str | None = None) -> ModelInfo:
        """The manifest of `name` (its newest version) or of `name` version `version`."""
        if version is not None and not (version.isascii() and version.isdigit()):
            # The path is the client's: "³" is a digit to str.isdigit, not to int().
            raise ModelNotFound(f"unknown version {version[:20]!r} of model {name!r}", model=name)
        return self.registry.resolve(f"{name}:{version}" if version else name)

    def metadata(self, name: str, version: str | None = None) -> ModelMetadata:
        """The model's versions, platform and tensors."""
        info = self.resolve(name, version)
        return ModelMetadata(
            name=info.name,
            versions=self.registry.versions(info.name),
            platform=info.framework,
            inputs=[TensorMetadata(name=INPUT_NAME, datatype="FP64", shape=[-1, info.n_features])],
            outputs=[TensorMetadata(name=OUTPUT_NAME, datatype="FP64", shape=[-1])],
        )

    def ready(self, name: str, version: str | None = None) -> ModelReady:
        """Ready when the version resolves (its manifest is valid); unknown: `ModelNotFound`."""
        return ModelReady(name=self.resolve(name, version).name, ready=True)

    async def infer(
        self,
        name: str,
        version: str | None,
        body: bytes,
        header_length: str | None,
        owner: str,
    ) -> bytes:
        """Predict the request's one input tensor with the model: an `InferResponse` as JSON,
        whose `predict` (a value per row) is spliced in as the worker stored it."""
        info = self.resolve(name, version)
        request, binary = parse(body, header_length)
        if len(request.inputs) != 1:
            raise InvalidInput(
                f"{len(request.inputs)} inputs: this model takes one, {INPUT_NAME} of shape "
                f"[n, {info.n_features}]"
            )
        for wanted in request.outputs or []:
            if wanted.name != OUTPUT_NAME:
                raise InvalidInput(f"unknown output {wanted.name!r}: the only one is {OUTPUT_NAME}")
        rows = rows_of(request.inputs[0], info.n_features, binary)
        predictions = await self.jobs.predict_now_json(rows, owner, f"{info.name}:{info.version}")
        return answer(info, request.id, len(rows), predictions)


def answer(info: ModelInfo, request_id: str | None, n: int, predictions: bytes) -> bytes:
    """The `InferResponse` JSON around `predictions` (a JSON array of `n` numbers), unparsed:
    decoding them to re-encode them would be the answer's largest cost (see `/predict`)."""
    head = {"model_name": info.name, "model_version": info.version, "id": request_id}
    output = {"name": OUTPUT_NAME, "shape": [n], "datatype": "FP64"}
    return b'%s,"outputs":[%s,"data":%s}]}' % (
        orjson.dumps(head)[:-1],
        orjson.dumps(output)[:-1],
        predictions,
    )


def parse(body: bytes, header_length: str | None) -> tuple[InferRequest, bytes | None]:
    """The JSON request, and the binary tensor data after it when the extension's header says
    how long the JSON part is."""
    binary = None
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise MalformedRequest(
                f"Inference-Header-Content-Length {header_length[:20]!r} does not fit a body of "
                f"{len(body)} bytes"
            )
        body, binary = body[: int(header_length)], body[int(header_length) :]
    try:
        return InferRequest.model_validate(orjson.loads(body)), binary
    except orjson.JSONDecodeError as exc:
        raise MalformedRequest(f"the request is not valid JSON: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidInput(f"{where}: {first['msg']}") from None
